/* HTTPS scraping: a self-signed certificate (made with the openssl command) and a Python
 * HTTPS server on 127.0.0.1; scrapes must verify against tls_config.ca_file, fail without
 * it, and pass with insecure_skip_verify. A second server requires a client certificate
 * (mutual TLS): tls_config.cert_file/key_file must be presented. Skipped when openssl or
 * python3 is missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/core.h"
#include "recorder.h"
#include "scrape/scrape.h"

static char dir[64];
static int port, mport; /* HTTPS; HTTPS requiring a client certificate */
static pid_t server = -1;

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) return -1;
  getsockname(fd, (struct sockaddr *)&a, &al);
  close(fd);
  return ntohs(a.sin_port);
}

static const char *skip_reason = "the HTTPS test server did not start";

static bool port_open(int p) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {
      .sin_family = AF_INET, .sin_port = htons((uint16_t)p), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  close(fd);
  return ok;
}

static void test_https(void **state) {
  if (server < 0) {
    fprintf(stderr, "SKIPPED: %s\n", skip_reason);
    skip();
  }
  recorder_t *rec = recorder_new();
  char cfg[2048];
  snprintf(
      cfg, sizeof cfg,
      "[{\"job_name\":\"verified\",\"scheme\":\"https\",\"scrape_interval\":\"2s\","
      "\"tls_config\":{\"ca_file\":\"%s/cert.pem\",\"server_name\":\"localhost\"},"
      "\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]},"
      "{\"job_name\":\"wrongname\",\"scheme\":\"https\",\"scrape_interval\":\"2s\","
      "\"tls_config\":{\"ca_file\":\"%s/cert.pem\"},\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]},"
      "{\"job_name\":\"unverified\",\"scheme\":\"https\",\"scrape_interval\":\"2s\","
      "\"static_configs\":[{\"targets\":[\"localhost:%d\"]}]},"
      "{\"job_name\":\"insecure\",\"scheme\":\"https\",\"scrape_interval\":\"2s\","
      "\"tls_config\":{\"insecure_skip_verify\":true},\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]},"
      "{\"job_name\":\"mtls\",\"scheme\":\"https\",\"scrape_interval\":\"2s\","
      "\"tls_config\":{\"ca_file\":\"%s/cert.pem\",\"server_name\":\"localhost\",\"cert_file\":\"%s/"
      "client.pem\",\"key_file\":\"%s/"
      "client-key.pem\"},\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]},"
      "{\"job_name\":\"mtls_nocert\",\"scheme\":\"https\",\"scrape_interval\":\"2s\","
      "\"tls_config\":{\"ca_file\":\"%s/cert.pem\",\"server_name\":\"localhost\"},"
      "\"static_configs\":[{\"targets\":[\"127.0.0.1:%d\"]}]}"
      "]",
      dir, port, dir, port, port, port, dir, dir, dir, mport, dir, mport);
  json_t *j = json_loads(cfg, 0, NULL);
  assert_non_null(j);
  scrape_options_t opt;
  scrape_options_default(&opt);
  opt.workers = 3;
  scrape_manager_t *m = NULL;
  char err[256];
  assert_int_equal(scrape_manager_new(&opt, j, recorder_sink, rec, &m, err, sizeof err), 0);
  json_decref(j);
  assert_int_equal(scrape_manager_start(m, err, sizeof err), 0);
  /* verified: CA + server_name while connecting to 127.0.0.1; wrongname: the certificate
   * is for localhost, not 127.0.0.1; unverified: no CA. */
  const char *jobs[] = {"job=verified", "job=wrongname", "job=unverified",
                        "job=insecure", "job=mtls",      "job=mtls_nocert"};
  const double want[] = {1, 0, 0, 1, 1, 0};
  /* TLS handshakes under a loaded sanitizer build can be slow: wait for the expected
   * outcome rather than judge the first scrape. */
  for (int i = 0; i < 6; i++) {
    bool seen = false;
    for (int waited = 0; waited < 15000 && !seen; waited += 50) {
      size_t n = recorder_find(rec, NULL, NULL, "__name__=up", jobs[i], NULL);
      double v = -1;
      if (n) recorder_find(rec, &v, NULL, "__name__=up", jobs[i], NULL);
      seen = n && v == want[i];
      if (!seen) usleep(50 * 1000);
    }
    if (!seen) {
      sb_t js = {0};
      scrape_targets_json(m, NULL, &js);
      fprintf(stderr, "%s: never up=%g\n%s\n", jobs[i], want[i], js.buf);
      sb_free(&js);
    }
    assert_true(seen);
  }
  /* The failing ones never succeeded. */
  double v1 = 0;
  size_t n1 = recorder_find(rec, &v1, NULL, "__name__=tls_metric", "job=wrongname", NULL);
  assert_int_equal(n1, 0);
  assert_int_equal(recorder_find(rec, NULL, NULL, "__name__=tls_metric", "job=unverified", NULL), 0);
  assert_int_equal(recorder_find(rec, NULL, NULL, "__name__=tls_metric", "job=mtls_nocert", NULL), 0);
  assert_true(recorder_find(rec, NULL, NULL, "__name__=tls_metric", "job=mtls", NULL) >= 1);
  assert_true(recorder_find(rec, NULL, NULL, "__name__=tls_metric", "job=verified", NULL) >= 1);
  /* The instance stays the configured address, not the TLS name. */
  char inst[64];
  snprintf(inst, sizeof inst, "instance=127.0.0.1:%d", port);
  assert_true(recorder_find(rec, NULL, NULL, "__name__=tls_metric", "job=verified", inst, NULL) >= 1);
  scrape_manager_free(m);
  recorder_free(rec);
}

static int setup(void **state) {
  snprintf(dir, sizeof dir, "/tmp/md-tls-XXXXXX");
  if (!mkdtemp(dir)) return -1;
  if (system("command -v openssl >/dev/null && command -v python3 >/dev/null") != 0) {
    skip_reason = "openssl or python3 is not installed";
    return 0;
  }
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
           "-addext subjectAltName=DNS:localhost -keyout %s/key.pem -out %s/cert.pem >/dev/null 2>&1",
           dir, dir);
  if (system(cmd) != 0) return 0;
  snprintf(cmd, sizeof cmd,
           "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=scraper "
           "-keyout %s/client-key.pem -out %s/client.pem >/dev/null 2>&1",
           dir, dir);
  if (system(cmd) != 0) return 0;
  port = free_port();
  mport = free_port();
  char py[2048];
  snprintf(
      py, sizeof py,
      "import http.server, ssl\n"
      "class H(http.server.BaseHTTPRequestHandler):\n"
      "    def log_message(self, *a): pass\n"
      "    def do_GET(self):\n"
      "        b = b'tls_metric 1\\n'\n"
      "        self.send_response(200); self.send_header('Content-Type', 'text/plain; version=0.0.4')\n"
      "        self.send_header('Content-Length', str(len(b))); self.end_headers(); self.wfile.write(b)\n"
      "import threading\n"
      "def serve(port, client_ca):\n"
      "    s = http.server.ThreadingHTTPServer(('127.0.0.1', port), H)\n"
      "    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('%s/cert.pem', '%s/key.pem')\n"
      "    if client_ca:\n"
      "        c.verify_mode = ssl.CERT_REQUIRED; c.load_verify_locations(client_ca)\n"
      "    s.socket = c.wrap_socket(s.socket, server_side=True)\n"
      "    s.serve_forever()\n"
      "threading.Thread(target=serve, args=(%d, '%s/client.pem'), daemon=True).start()\n"
      "serve(%d, None)\n",
      dir, dir, mport, dir, port);
  pid_t pid = fork();
  if (pid == 0) {
    execlp("python3", "python3", "-c", py, (char *)NULL);
    _exit(127);
  }
  if (pid < 0) return 0;
  for (int i = 0; i < 100 && !(port_open(port) && port_open(mport)); i++)
    usleep(50 * 1000);
  if (!port_open(port) || !port_open(mport)) {
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    return 0;
  }
  server = pid;
  return 0;
}

static int teardown(void **state) {
  if (server > 0) {
    kill(server, SIGTERM);
    waitpid(server, NULL, 0);
  }
  md_rm_rf(dir);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_https)};
  return cmocka_run_group_tests(tests, setup, teardown);
}
