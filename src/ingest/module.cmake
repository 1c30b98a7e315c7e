# Generated protobuf-c code for remote_write and OTLP (src/ingest/proto/*.proto), compiled
# into md_ingest. Included from md_module() in the top CMakeLists.txt.
set(_md_pb_out ${CMAKE_BINARY_DIR}/generated/ingest)
file(MAKE_DIRECTORY ${_md_pb_out})
find_program(PROTOC_C protoc-c REQUIRED)
foreach(_md_proto remote otlp)
  set(_md_src ${CMAKE_SOURCE_DIR}/src/ingest/proto/${_md_proto}.proto)
  add_custom_command(
    OUTPUT ${_md_pb_out}/${_md_proto}.pb-c.c ${_md_pb_out}/${_md_proto}.pb-c.h
    COMMAND ${PROTOC_C} --c_out=${_md_pb_out} -I${CMAKE_SOURCE_DIR}/src/ingest/proto ${_md_src}
    DEPENDS ${_md_src}
    COMMENT "protoc-c ${_md_proto}.proto")
  target_sources(md_ingest PRIVATE ${_md_pb_out}/${_md_proto}.pb-c.c)
  set_source_files_properties(${_md_pb_out}/${_md_proto}.pb-c.c PROPERTIES COMPILE_OPTIONS "-w")
endforeach()
