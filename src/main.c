/* metricsd entry point (replaced by the server's start-up sequence as the foundation lands). */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--version") == 0) {
    printf("metricsd %s (commit %s)\n", METRICSD_VERSION, METRICSD_COMMIT);
    return 0;
  }
  fprintf(stderr, "metricsd: server not built yet\n");
  return 1;
}
