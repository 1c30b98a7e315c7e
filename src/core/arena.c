/* Bump-pointer arena. Blocks are chained; oversized requests get a block of their own. */
#include "core.h"

#include <stdlib.h>
#include <string.h>

typedef struct arena_block {
  struct arena_block *next;
  size_t size, used;
  _Alignas(16) unsigned char data[];
} arena_block_t;

struct arena {
  arena_block_t *head;
  size_t block_size;
  size_t bytes;
};

static arena_block_t *block_new(arena_t *a, size_t size) {
  arena_block_t *b = malloc(sizeof *b + size);
  if (!b) return NULL;
  b->size = size;
  b->used = 0;
  b->next = a->head;
  a->head = b;
  a->bytes += sizeof *b + size;
  return b;
}

arena_t *arena_new(size_t block_size) {
  arena_t *a = calloc(1, sizeof *a);
  if (!a) return NULL;
  a->block_size = block_size ? block_size : 64 * 1024;
  return a;
}

void arena_free(arena_t *a) {
  if (!a) return;
  arena_block_t *b = a->head;
  while (b) {
    arena_block_t *n = b->next;
    free(b);
    b = n;
  }
  free(a);
}

void arena_reset(arena_t *a) {
  arena_block_t *b = a->head, *last = NULL;
  while (b) {
    arena_block_t *n = b->next;
    if (!n) {
      last = b;
      break;
    }
    free(b);
    b = n;
  }
  a->head = last;
  a->bytes = 0;
  if (last) {
    last->used = 0;
    a->bytes = sizeof *last + last->size;
  }
}

void *arena_alloc(arena_t *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  if (n == 0) n = 16;
  arena_block_t *b = a->head;
  if (!b || b->size - b->used < n) {
    if (n > a->block_size / 4) {
      /* Large: own block, inserted behind the current one so the current keeps filling. */
      arena_block_t *big = malloc(sizeof *big + n);
      if (!big) return NULL;
      big->size = big->used = n;
      a->bytes += sizeof *big + n;
      if (b) {
        big->next = b->next;
        b->next = big;
      } else {
        big->next = NULL;
        a->head = big;
      }
      return big->data;
    }
    b = block_new(a, a->block_size);
    if (!b) return NULL;
  }
  void *p = b->data + b->used;
  b->used += n;
  return p;
}

void *arena_calloc(arena_t *a, size_t n) {
  void *p = arena_alloc(a, n);
  if (p) memset(p, 0, n);
  return p;
}

char *arena_strndup(arena_t *a, const char *s, size_t n) {
  char *p = arena_alloc(a, n + 1);
  if (!p) return NULL;
  memcpy(p, s, n);
  p[n] = 0;
  return p;
}

char *arena_strdup(arena_t *a, const char *s) { return arena_strndup(a, s, strlen(s)); }

size_t arena_bytes(const arena_t *a) { return a->bytes; }
