/* Private declarations shared by the scrape module's files. */
#ifndef METRICSD_SCRAPE_INTERNAL_H
#define METRICSD_SCRAPE_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "scrape/scrape.h"

struct scrape_labels {
  tsdb_label_t *v;
  size_t n, cap;
  arena_t *arena;
  pcre2_match_data *md; /* relabel matching, created on first use */
  sb_t tmp;             /* relabel scratch (joined source values, expansions) */
  sb_t tmp2;
};

int scrape_labels_setn(scrape_labels_t *ls, const char *name, const char *value, size_t vlen);
int scrape_labels_assign_ref(scrape_labels_t *ls, const tsdb_label_t *labels, size_t n);
uint64_t scrape_labels_hash(const tsdb_label_t *l, size_t n);

/* MD5 of p (the digest Prometheus's hashmod takes its modulus from). */
void scrape_md5(const void *p, size_t n, uint8_t out[16]);

/* Text of a JSON scalar (string, number, bool) in buf; NULL for other kinds. */
const char *scrape_json_text(const json_t *v, char *buf, size_t n);
/* Legacy Prometheus label name syntax. */
bool scrape_valid_label_name(const char *s);

#endif
