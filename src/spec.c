/*
 * spec.c - parsing and canonicalising package specs, and the PEP 440
 * version order their constraints are checked in (spec.h).
 *
 * A canonical spec becomes part of worker keys and bubble paths, so every
 * byte is checked against a small allow-list instead of looking for known
 * bad patterns; anything else is refused with the reason.
 */
#include "errmsg.h"
#include "spec.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Printable form of one byte for error messages; hostile bytes stay inert. */
static const char *spec_show(char c, char buf[8])
{
	unsigned char u = (unsigned char)c;

	if (u >= 0x21 && u < 0x7f)
		snprintf(buf, 8, "%c", c);
	else
		snprintf(buf, 8, "\\x%02x", u);
	return buf;
}

static int spec_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int spec_is_alnum(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int spec_is_name_char(char c)
{
	return spec_is_alnum(c) || c == '.' || c == '_' || c == '-';
}

static int spec_is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int spec_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int spec_is_op_char(char c)
{
	return c == '<' || c == '>' || c == '=' || c == '!' || c == '~';
}

static int spec_is_version_char(char c)
{
	return spec_is_alnum(c) || c == '.' || c == '+' || c == '!';
}

static void spec_trim(const char **s, size_t *len)
{
	while (*len && spec_is_space(**s)) {
		(*s)++;
		(*len)--;
	}
	while (*len && spec_is_space((*s)[*len - 1]))
		(*len)--;
}

int spec_normalize_name(const char *name, size_t len, char *out, size_t n)
{
	size_t o = 0;

	if (len == 0 || !spec_is_alnum(name[0]) || !spec_is_alnum(name[len - 1]))
		return -EINVAL;
	if (len > SPEC_NAME_MAX)
		return -ENAMETOOLONG;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (!spec_is_name_char(c))
			return -EINVAL;
		if (!spec_is_alnum(c)) {
			/* A run of separators collapses to one '-'. */
			if (o > 0 && out[o - 1] == '-')
				continue;
			c = '-';
		}
		if (o + 1 >= n)
			return -ENAMETOOLONG;
		out[o++] = (char)tolower((unsigned char)c);
	}
	out[o] = '\0';
	return 0;
}

/* ---- PEP 440 versions ---- */

#define SPEC_REL_MAX 32
#define SPEC_NUM_DIGITS 18     /* fits an unsigned long long */

struct spec_ver {
	unsigned long long epoch, rel[SPEC_REL_MAX], pre_n, post_n, dev_n;
	int nrel;
	int pre;                   /* -1 none, 0 a, 1 b, 2 rc */
	int post, dev;             /* present? */
	const char *local;         /* after '+' (points into the text), or NULL */
};

static const struct {
	const char *word;
	int phase;                 /* 0 pre-release, 1 post, 2 dev: in this order */
	int kind;                  /* of a pre-release */
} spec_ver_words[] = {
	{ "a", 0, 0 }, { "alpha", 0, 0 }, { "b", 0, 1 }, { "beta", 0, 1 },
	{ "rc", 0, 2 }, { "c", 0, 2 }, { "pre", 0, 2 }, { "preview", 0, 2 },
	{ "post", 1, 0 }, { "rev", 1, 0 }, { "r", 1, 0 }, { "dev", 2, 0 },
};

/* Reads a number at *s into *out: the count of digits (0: none, *out is
 * 0), or -1 for more digits than fit. */
static int spec_ver_num(const char **s, unsigned long long *out)
{
	int digits = 0;

	*out = 0;
	while (spec_is_digit(**s)) {
		if (++digits > SPEC_NUM_DIGITS)
			return -1;
		*out = *out * 10 + (unsigned long long)(*(*s)++ - '0');
	}
	return digits;
}

static int spec_ver_parse(const char *s, struct spec_ver *v)
{
	unsigned long long n;
	int phase = 0;

	memset(v, 0, sizeof(*v));
	v->pre = -1;
	if (spec_ver_num(&s, &n) <= 0)
		return -EINVAL;
	if (*s == '!') {
		v->epoch = n;
		s++;
		if (spec_ver_num(&s, &n) <= 0)
			return -EINVAL;
	}
	v->rel[v->nrel++] = n;
	while (s[0] == '.' && spec_is_digit(s[1])) {
		s++;
		if (v->nrel == SPEC_REL_MAX || spec_ver_num(&s, &n) < 0)
			return -EINVAL;
		v->rel[v->nrel++] = n;
	}
	while (*s && *s != '+') {
		const char *w;
		int k = -1;

		if (*s == '.')
			s++;
		for (w = s; spec_is_alpha(*s); s++)
			;
		for (size_t i = 0; i < sizeof(spec_ver_words) / sizeof(spec_ver_words[0]); i++)
			if (strlen(spec_ver_words[i].word) == (size_t)(s - w) &&
			    strncasecmp(w, spec_ver_words[i].word, (size_t)(s - w)) == 0)
				k = (int)i;
		if (k < 0 || spec_ver_words[k].phase < phase)
			return -EINVAL;
		phase = spec_ver_words[k].phase + 1;
		if (s[0] == '.' && spec_is_digit(s[1]))
			s++;
		if (spec_ver_num(&s, &n) < 0)
			return -EINVAL;
		if (spec_ver_words[k].phase == 0) {
			v->pre = spec_ver_words[k].kind;
			v->pre_n = n;
		} else if (spec_ver_words[k].phase == 1) {
			v->post = 1;
			v->post_n = n;
		} else {
			v->dev = 1;
			v->dev_n = n;
		}
	}
	if (*s == '+') {
		v->local = ++s;
		for (; *s; s++)
			if (!spec_is_alnum(*s) && (*s != '.' || s == v->local || !spec_is_alnum(s[1])))
				return -EINVAL;
		if (!v->local[0])
			return -EINVAL;
	}
	return 0;
}

static int spec_cmp_u(unsigned long long a, unsigned long long b)
{
	return (a > b) - (a < b);
}

static int spec_ver_is_pre(const struct spec_ver *v)
{
	return v->pre >= 0 || v->dev;
}

/* Epoch, then release segments, the shorter padded with zeros. */
static int spec_ver_release_cmp(const struct spec_ver *a, const struct spec_ver *b)
{
	int n = a->nrel > b->nrel ? a->nrel : b->nrel, c;

	if ((c = spec_cmp_u(a->epoch, b->epoch)))
		return c;
	for (int i = 0; i < n; i++)
		if ((c = spec_cmp_u(i < a->nrel ? a->rel[i] : 0, i < b->nrel ? b->rel[i] : 0)))
			return c;
	return 0;
}

/* 1.0.dev1 (0) < 1.0a1, 1.0b1, 1.0rc1 (1-3) < 1.0 and its post-releases (4). */
static unsigned spec_ver_pre_rank(const struct spec_ver *v)
{
	if (v->pre >= 0)
		return 1 + (unsigned)v->pre;
	return !v->post && v->dev ? 0 : 4;
}

static int spec_ver_cmp(const struct spec_ver *a, const struct spec_ver *b, int local)
{
	int c;

	if ((c = spec_ver_release_cmp(a, b)) ||
	    (c = spec_cmp_u(spec_ver_pre_rank(a), spec_ver_pre_rank(b))) ||
	    (c = spec_cmp_u(a->pre_n, b->pre_n)) ||
	    (c = spec_cmp_u((unsigned)a->post, (unsigned)b->post)) ||
	    (c = spec_cmp_u(a->post_n, b->post_n)) ||
	    (c = spec_cmp_u((unsigned)!a->dev, (unsigned)!b->dev)) ||
	    (c = spec_cmp_u(a->dev_n, b->dev_n)))
		return c;
	if (!local || (!a->local && !b->local))
		return 0;
	if (!a->local || !b->local)
		return a->local ? 1 : -1;
	c = strcasecmp(a->local, b->local);
	return (c > 0) - (c < 0);
}

/* Does v satisfy "op c"? */
static int spec_ver_match(const struct spec_ver *v, int op, const struct spec_ver *c)
{
	int cmp = spec_ver_cmp(v, c, (op == SPEC_EQ || op == SPEC_NE) && c->local);

	switch (op) {
	case SPEC_EQ:
		return cmp == 0;
	case SPEC_NE:
		return cmp != 0;
	case SPEC_LE:
		return cmp <= 0;
	case SPEC_GE:
		return cmp >= 0;
	case SPEC_LT:
		return cmp < 0 && !(spec_ver_is_pre(v) && !spec_ver_is_pre(c) &&
				    spec_ver_release_cmp(v, c) == 0);
	case SPEC_GT:
		return cmp > 0 && !(v->post && !c->post && spec_ver_release_cmp(v, c) == 0);
	case SPEC_COMPAT:
		/* ~=1.4.5: >=1.4.5 and the same 1.4 */
		if (cmp < 0 || v->epoch != c->epoch)
			return 0;
		for (int i = 0; i < c->nrel - 1; i++)
			if ((i < v->nrel ? v->rel[i] : 0) != c->rel[i])
				return 0;
		return 1;
	}
	return 0;
}

int spec_version_cmp(const char *a, const char *b)
{
	struct spec_ver x, y;
	int okx = spec_ver_parse(a, &x) == 0, oky = spec_ver_parse(b, &y) == 0, c;

	if (okx && oky)
		return spec_ver_cmp(&x, &y, 1);
	if (okx != oky)
		return okx - oky;
	c = strcmp(a, b);
	return (c > 0) - (c < 0);
}

int spec_item_allows(const struct spec_item *it, const char *version)
{
	struct spec_ver v, c;
	int pre_named = 0;

	if (it->version[0])
		return strcmp(it->version, version) == 0;
	if (strlen(version) > SPEC_VERSION_MAX || spec_ver_parse(version, &v) < 0)
		return 0;
	for (int i = 0; i < it->ncons; i++) {
		if (spec_ver_parse(it->cons[i].version, &c) < 0 || !spec_ver_match(&v, it->cons[i].op, &c))
			return 0;
		pre_named |= spec_ver_is_pre(&c);
	}
	return pre_named || !spec_ver_is_pre(&v);
}

/* ---- parsing ---- */

static const char *const spec_op_text[SPEC_NOPS] = { "~=", "==", ">=", ">", "<=", "<", "!=" };

/* Length of the operator that s starts with (0: none), its enum in *op
 * (-1 for "===", which is refused). */
static size_t spec_op_len(const char *s, size_t len, int *op)
{
	if (len >= 3 && memcmp(s, "===", 3) == 0) {
		*op = -1;
		return 3;
	}
	/* ">=" before ">", "<=" before "<": the table's order */
	for (int i = 0; i < SPEC_NOPS; i++) {
		size_t l = strlen(spec_op_text[i]);

		if (len >= l && memcmp(s, spec_op_text[i], l) == 0) {
			*op = i;
			return l;
		}
	}
	return 0;
}

static int spec_parse_version(const char *v, size_t len, const char *op, const char *item, size_t ilen,
			      char *out, char *err, size_t errlen)
{
	char sb[8];

	if (len == 0)
		return errmsg_set(-EINVAL, err, errlen, "missing version after '%s' in '%.*s'",
				 op, (int)ilen, item);
	if (len > SPEC_VERSION_MAX)
		return errmsg_set(-ENAMETOOLONG, err, errlen, "version in '%.40s...' is %zu bytes, max %d",
				 item, len, SPEC_VERSION_MAX);
	for (size_t i = 0; i < len; i++) {
		if (spec_is_version_char(v[i]))
			continue;
		if (spec_is_op_char(v[i]))
			return errmsg_set(-EINVAL, err, errlen,
					 "'%s' inside version in '%.*s': separate constraints with ','",
					 spec_show(v[i], sb), (int)ilen, item);
		if (spec_is_space(v[i]))
			return errmsg_set(-EINVAL, err, errlen, "whitespace inside version in '%.*s'",
					 (int)ilen, item);
		return errmsg_set(-EINVAL, err, errlen, "invalid character '%s' in version of '%.*s'",
				 spec_show(v[i], sb), (int)ilen, item);
	}
	if (!spec_is_digit(v[0]))
		return errmsg_set(-EINVAL, err, errlen, "version '%.*s' must start with a digit",
				 (int)len, v);
	if (!spec_is_alnum(v[len - 1]))
		return errmsg_set(-EINVAL, err, errlen, "version '%.*s' must end with a letter or digit",
				 (int)len, v);
	for (size_t i = 1; i < len; i++)
		if (v[i] == '.' && v[i - 1] == '.')
			return errmsg_set(-EINVAL, err, errlen, "version '%.*s' contains '..'",
					 (int)len, v);
	memcpy(out, v, len);
	out[len] = '\0';
	return 0;
}

/* One constraint "OP version" at c (trimmed) for it; item is the text to
 * name in a reason. */
static int spec_parse_cons(const char *c, size_t clen, struct spec_item *it,
			   const char *item, size_t ilen, char *err, size_t errlen)
{
	struct spec_constraint *k;
	struct spec_ver pv;
	size_t p;
	int op, rc;

	p = spec_op_len(c, clen, &op);
	if (p == 0)
		return errmsg_set(-EINVAL, err, errlen,
				 "unknown operator in '%.*s': use ==, !=, <, <=, >, >= or ~=",
				 (int)ilen, item);
	if (op < 0)
		return errmsg_set(-EINVAL, err, errlen, "'===' in '%.*s' is not supported: use '=='",
				 (int)ilen, item);
	while (p < clen && spec_is_space(c[p]))
		p++;
	if ((op == SPEC_EQ || op == SPEC_NE) && clen - p >= 2 && c[clen - 1] == '*' && c[clen - 2] == '.')
		return errmsg_set(-EINVAL, err, errlen,
				 "'%.*s': wildcard versions are not supported; give a range such as '>=1.2,<1.3'",
				 (int)ilen, item);
	if (it->ncons == SPEC_MAX_CONSTRAINTS)
		return errmsg_set(-E2BIG, err, errlen, "too many constraints for '%s', max %d", it->name,
				 SPEC_MAX_CONSTRAINTS);
	k = &it->cons[it->ncons];
	rc = spec_parse_version(c + p, clen - p, spec_op_text[op], item, ilen, k->version, err, errlen);
	if (rc < 0)
		return rc;
	/* A pin alone names a directory; anything compared must be PEP 440. */
	if (op != SPEC_EQ && spec_ver_parse(k->version, &pv) < 0)
		return errmsg_set(-EINVAL, err, errlen, "'%s' in '%.*s' is not a PEP 440 version",
				 k->version, (int)ilen, item);
	if (op == SPEC_COMPAT && pv.nrel < 2)
		return errmsg_set(-EINVAL, err, errlen, "'~=%s' needs two release segments or more (~=%s.0)",
				 k->version, k->version);
	k->op = op;
	it->ncons++;
	return 0;
}

/* One item that starts with a name, trimmed and non-empty. */
static int spec_parse_item(const char *s, size_t len, struct spec_item *it, char *err, size_t errlen)
{
	size_t nlen = 0, p;
	char sb[8];
	int rc;

	while (nlen < len && spec_is_name_char(s[nlen]))
		nlen++;
	p = nlen;
	while (p < len && spec_is_space(s[p]))
		p++;
	if (nlen == 0)
		return errmsg_set(-EINVAL, err, errlen, "invalid character '%s' in '%.*s'",
				 spec_show(s[0], sb), (int)len, s);
	if (p < len && p > nlen && spec_is_name_char(s[p]))
		return errmsg_set(-EINVAL, err, errlen, "whitespace inside package name in '%.*s'",
				 (int)len, s);
	if (p < len && !spec_is_op_char(s[p]))
		return errmsg_set(-EINVAL, err, errlen, "invalid character '%s' in package name in '%.*s'",
				 spec_show(s[p], sb), (int)len, s);
	if (nlen > SPEC_NAME_MAX)
		return errmsg_set(-ENAMETOOLONG, err, errlen, "package name in '%.40s...' is %zu bytes, max %d",
				 s, nlen, SPEC_NAME_MAX);
	rc = spec_normalize_name(s, nlen, it->name, sizeof(it->name));
	if (rc < 0)
		return errmsg_set(rc, err, errlen,
				 "package name '%.*s' must start and end with a letter or digit",
				 (int)nlen, s);
	if (p == len)
		return 0;
	return spec_parse_cons(s + p, len - p, it, s, len, err, errlen);
}

static int spec_cons_cmp(const void *a, const void *b)
{
	const struct spec_constraint *x = a, *y = b;

	if (x->op != y->op)
		return x->op - y->op;
	return strcmp(x->version, y->version);
}

/* A pin absorbs the item's other constraints, which must hold for it;
 * an unpinned item's constraints are sorted without repeats. */
static int spec_item_settle(struct spec_item *it, char *err, size_t errlen)
{
	struct spec_ver pv, cv;
	int pin = -1, n = 0;

	for (int i = 0; i < it->ncons && pin < 0; i++)
		if (it->cons[i].op == SPEC_EQ)
			pin = i;
	if (pin < 0) {
		if (strcmp(it->name, "base") == 0)
			return errmsg_set(-EINVAL, err, errlen,
					 "a package named 'base' must be pinned (base==VERSION): "
					 "'base' alone is the base environment");
		qsort(it->cons, (size_t)it->ncons, sizeof(it->cons[0]), spec_cons_cmp);
		for (int i = 0; i < it->ncons; i++)
			if (i == 0 || spec_cons_cmp(&it->cons[i], &it->cons[n - 1]) != 0)
				it->cons[n++] = it->cons[i];
		it->ncons = n;
		return 0;
	}
	if (it->ncons > 1 && spec_ver_parse(it->cons[pin].version, &pv) < 0)
		return errmsg_set(-EINVAL, err, errlen,
				 "'%s==%s' is not a PEP 440 version, so other constraints cannot be checked against it",
				 it->name, it->cons[pin].version);
	for (int i = 0; i < it->ncons; i++) {
		const struct spec_constraint *k = &it->cons[i];

		if (i == pin)
			continue;
		if (spec_ver_parse(k->version, &cv) < 0 || !spec_ver_match(&pv, k->op, &cv))
			return errmsg_set(-EINVAL, err, errlen, "'%s==%s' conflicts with '%s%s'", it->name,
					 it->cons[pin].version, spec_op_text[k->op], k->version);
	}
	memcpy(it->version, it->cons[pin].version, sizeof(it->version));
	it->ncons = 0;
	return 0;
}

int spec_item_str(const struct spec_item *it, char *buf, size_t n)
{
	size_t o;
	int w;

	w = it->version[0] ? snprintf(buf, n, "%s==%s", it->name, it->version)
			   : snprintf(buf, n, "%s", it->name);
	if (w < 0 || (size_t)w >= n)
		return -ENAMETOOLONG;
	o = (size_t)w;
	for (int i = 0; i < it->ncons; i++) {
		const struct spec_constraint *k = &it->cons[i];

		w = snprintf(buf + o, n - o, "%s%s%s", i ? "," : "",
			     k->op >= 0 && k->op < SPEC_NOPS ? spec_op_text[k->op] : "?", k->version);
		if (w < 0 || (size_t)w >= n - o)
			return -ENAMETOOLONG;
		o += (size_t)w;
	}
	return 0;
}

static int spec_item_cmp(const void *a, const void *b)
{
	return strcmp(((const struct spec_item *)a)->name, ((const struct spec_item *)b)->name);
}

static int spec_build_canon(struct spec *out, char *err, size_t errlen)
{
	size_t o = 0;

	for (int i = 0; i < out->n; i++) {
		if (i && o + 1 < sizeof(out->canon))
			out->canon[o++] = ',';
		if (o + 1 >= sizeof(out->canon) ||
		    spec_item_str(&out->items[i], out->canon + o, sizeof(out->canon) - o) < 0) {
			out->canon[0] = '\0';
			return errmsg_set(-ENAMETOOLONG, err, errlen, "canonical spec exceeds %d bytes",
					 SPEC_MAX_LEN - 1);
		}
		o += strlen(out->canon + o);
	}
	return 0;
}

int spec_parse(const char *in, size_t len, struct spec *out, char *err, size_t errlen)
{
	const char *s = in, *end, *comma;
	size_t slen = len;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!in || len == 0)
		return errmsg_set(-EINVAL, err, errlen, "empty spec");
	if (len >= SPEC_MAX_LEN)
		return errmsg_set(-ENAMETOOLONG, err, errlen, "spec is %zu bytes, max %d", len,
				 SPEC_MAX_LEN - 1);
	if (memchr(in, '\0', len))
		return errmsg_set(-EINVAL, err, errlen, "spec contains a NUL byte");
	spec_trim(&s, &slen);
	if (slen == 0)
		return errmsg_set(-EINVAL, err, errlen, "empty spec");
	if (slen == 4 && strncasecmp(s, "base", 4) == 0) {
		strcpy(out->canon, "base");
		return 0;
	}

	end = s + slen;
	for (;;) {
		const char *item = s;
		size_t ilen;

		comma = memchr(s, ',', (size_t)(end - s));
		ilen = (size_t)((comma ? comma : end) - s);
		spec_trim(&item, &ilen);
		if (ilen == 0)
			return errmsg_set(-EINVAL, err, errlen, "empty item in spec (stray ',')");
		if (spec_is_op_char(item[0])) {
			/* another constraint for the name before */
			if (out->n == 0)
				return errmsg_set(-EINVAL, err, errlen, "missing package name in '%.*s'",
						 (int)ilen, item);
			rc = spec_parse_cons(item, ilen, &out->items[out->n - 1], item, ilen, err, errlen);
		} else if (out->n == SPEC_MAX_ITEMS) {
			return errmsg_set(-E2BIG, err, errlen, "too many packages in spec, max %d",
					 SPEC_MAX_ITEMS);
		} else if ((rc = spec_parse_item(item, ilen, &out->items[out->n], err, errlen)) == 0) {
			out->n++;
		}
		if (rc < 0)
			return rc;
		if (!comma)
			break;
		s = comma + 1;
	}

	for (int i = 0; i < out->n; i++)
		if ((rc = spec_item_settle(&out->items[i], err, errlen)) < 0)
			return rc;
	qsort(out->items, (size_t)out->n, sizeof(out->items[0]), spec_item_cmp);
	for (int i = 1; i < out->n; i++)
		if (strcmp(out->items[i].name, out->items[i - 1].name) == 0)
			return errmsg_set(-EINVAL, err, errlen, "package '%s' appears more than once",
					 out->items[i].name);
	return spec_build_canon(out, err, errlen);
}
