/* symbols.c - stack and %p symbolization from /proc/kallsyms ("symbol+0xoff").
 *
 * Only text symbols ('t'/'T') are kept: stack frames are return addresses.
 * When kptr_restrict hides addresses, kallsyms shows every one as zero; that
 * counts as unreadable, and frames stay raw hex as output.py prints them. */
#include <stdlib.h>
#include <string.h>

#include "ktaprun.h"

struct sym {
	uint64_t addr;
	const char *name;
};

struct symtab {
	char *text;		/* the file, names point into it */
	struct sym *syms;
	size_t n;
};

static int by_addr(const void *a, const void *b)
{
	const struct sym *x = a, *y = b;

	if (x->addr != y->addr)
		return x->addr > y->addr ? 1 : -1;
	/* Aliases: file order, so the lookup's pick (the last) is deterministic. */
	return (x->name > y->name) - (x->name < y->name);
}

/* "ADDR TYPE NAME[\t[module]]": terminates NAME in place, 0 if not text. */
static int parse_line(char *line, struct sym *out)
{
	char *end, *name;

	out->addr = strtoull(line, &end, 16);
	if (end == line || end[0] != ' ' || (end[1] != 't' && end[1] != 'T') || end[2] != ' ')
		return 0;
	name = end + 3;
	name[strcspn(name, " \t")] = 0;
	out->name = name;
	return out->addr != 0 && *name;
}

struct symtab *symtab_load(const char *path)
{
	struct symtab *t;
	size_t len, cap = 0;
	char *line, *next;
	unsigned char *text = read_whole(path, &len);

	if (!text)
		return NULL;
	t = xmalloc(sizeof(*t));
	t->text = (char *)text;
	t->syms = NULL;
	t->n = 0;
	for (line = t->text; *line; line = next) {
		next = strchr(line, '\n');
		next = next ? (*next = 0, next + 1) : line + strlen(line);
		if (t->n == cap) {
			cap = cap ? cap * 2 : 1024;
			t->syms = xrealloc(t->syms, cap * sizeof(*t->syms));
		}
		t->n += parse_line(line, &t->syms[t->n]);
	}
	if (!t->n) {
		symtab_free(t);
		return NULL;
	}
	qsort(t->syms, t->n, sizeof(*t->syms), by_addr);
	return t;
}

void symtab_free(struct symtab *t)
{
	if (!t)
		return;
	free(t->syms);
	free(t->text);
	free(t);
}

int symtab_name(const struct symtab *t, uint64_t addr, struct sb *out)
{
	size_t lo = 0, hi = t->n;

	if (!t->n || addr < t->syms[0].addr)
		return 0;
	while (hi - lo > 1) {		/* last symbol at or below addr */
		size_t mid = lo + (hi - lo) / 2;

		if (t->syms[mid].addr <= addr)
			lo = mid;
		else
			hi = mid;
	}
	sb_printf(out, "%s+0x%llx", t->syms[lo].name,
		  (unsigned long long)(addr - t->syms[lo].addr));
	return 1;
}
