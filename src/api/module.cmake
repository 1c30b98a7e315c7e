# server.c reaches the feature modules' hooks (api_register_*, api_start_* ... in
# src/api/<module>.c) through weak references only, and a linker never pulls an archive
# member for a weak reference. So whoever links md_api links it as a whole archive: every
# hook file present in src/api/ is linked in, and absent ones are simply skipped.
# Included from md_module() in the top CMakeLists.txt.
target_link_options(md_api INTERFACE
  "SHELL:-Wl,--whole-archive $<TARGET_FILE:md_api> -Wl,--no-whole-archive")

# api_commit() lives in the generated commit.c (see the top CMakeLists.txt).
target_sources(md_api PRIVATE ${CMAKE_BINARY_DIR}/generated/commit.c)
