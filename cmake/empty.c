/* Placeholder so a module without sources still forms a library. */
typedef int md_empty_translation_unit;
