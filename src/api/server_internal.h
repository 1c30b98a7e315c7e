/*
 * Private to server.c and health.c: the api_t fields and the built-in routes.
 */
#ifndef METRICSD_API_SERVER_INTERNAL_H
#define METRICSD_API_SERVER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "api.h"

typedef struct api_slot {
  char *name;
  void *ptr;
} api_slot_t;

typedef struct api_health {
  char name[48];
  char status[16];
  char detail[200];
} api_health_t;

struct api {
  pthread_mutex_t mu;        /* cfg, retired, slots, health */
  pthread_mutex_t reload_mu; /* one reload at a time */
  config_t *cfg;
  config_t **retired;        /* replaced by reloads; freed by api_free */
  size_t nretired;
  config_source_t src;
  tsdb_t *db;
  metrics_registry_t *metrics;
  http_router_t *router;
  http_server_t *http;
  int64_t start_ms;
  char *listen, *data_dir;
  char instance[256];
  api_slot_t *slots;
  size_t nslots;
  api_health_t *health;
  size_t nhealth;
  _Atomic bool stopping;
  _Atomic bool ready;
  bool stopped;
  unsigned started;          /* bit i: start hook i (start order) succeeded */
  pthread_t self_thread;
  bool self_running;
  bool self_quit;
  pthread_mutex_t self_mu;
  pthread_cond_t self_cv;
};

/* health.c: /health, /ready, /-/healthy, /-/ready, /metrics/stats, /-/reload, /metrics. */
int api_register_builtin(api_t *api, http_router_t *r);
/* Converts the config's keys for the http module (strings stay owned by the config). */
void api_auth_keys_from(const config_t *c, http_auth_key_t *keys);

#endif
