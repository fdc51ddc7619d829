/*
 * spec.c - parsing and canonicalising package specs (spec.h).
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

static int spec_parse_version(const char *v, size_t len, const char *item, size_t ilen,
			      char *out, char *err, size_t errlen)
{
	char sb[8];

	if (len == 0)
		return errmsg_set(-EINVAL, err, errlen, "missing version after '==' in '%.*s'",
				 (int)ilen, item);
	if (len > SPEC_VERSION_MAX)
		return errmsg_set(-ENAMETOOLONG, err, errlen, "version in '%.40s...' is %zu bytes, max %d",
				 item, len, SPEC_VERSION_MAX);
	for (size_t i = 0; i < len; i++) {
		if (spec_is_version_char(v[i]))
			continue;
		if (v[i] == '=' || v[i] == '<' || v[i] == '>' || v[i] == '~' || v[i] == '*')
			return errmsg_set(-EINVAL, err, errlen,
					 "'%.*s': only exact pins 'name==version' are supported",
					 (int)ilen, item);
		if (spec_is_space(v[i]))
			return errmsg_set(-EINVAL, err, errlen, "whitespace inside version in '%.*s'",
					 (int)ilen, item);
		return errmsg_set(-EINVAL, err, errlen, "invalid character '%s' in version of '%.*s'",
				 spec_show(v[i], sb), (int)ilen, item);
	}
	if (v[0] < '0' || v[0] > '9')
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

/* One "name == version" item, already trimmed and non-empty. */
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
	if (p == len)
		return errmsg_set(-EINVAL, err, errlen,
				 "'%.*s' has no version: pin it as 'name==version'", (int)len, s);
	if (nlen == 0) {
		if (s[0] == '=')
			return errmsg_set(-EINVAL, err, errlen, "missing package name in '%.*s'",
					 (int)len, s);
		return errmsg_set(-EINVAL, err, errlen, "invalid character '%s' in '%.*s'",
				 spec_show(s[0], sb), (int)len, s);
	}
	if (p > nlen && spec_is_name_char(s[p]))
		return errmsg_set(-EINVAL, err, errlen, "whitespace inside package name in '%.*s'",
				 (int)len, s);
	if (s[p] == '<' || s[p] == '>' || s[p] == '~' || s[p] == '!' ||
	    (s[p] == '=' && (p + 1 >= len || s[p + 1] != '=')) ||
	    (s[p] == '=' && p + 2 < len && s[p + 2] == '='))
		return errmsg_set(-EINVAL, err, errlen,
				 "'%.*s': only exact pins 'name==version' are supported", (int)len, s);
	if (s[p] != '=')
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
	p += 2;
	while (p < len && spec_is_space(s[p]))
		p++;
	return spec_parse_version(s + p, len - p, s, len, it->version, err, errlen);
}

static int spec_item_cmp(const void *a, const void *b)
{
	return strcmp(((const struct spec_item *)a)->name, ((const struct spec_item *)b)->name);
}

static int spec_build_canon(struct spec *out, char *err, size_t errlen)
{
	size_t o = 0;
	int w;

	for (int i = 0; i < out->n; i++) {
		w = snprintf(out->canon + o, sizeof(out->canon) - o, "%s%s==%s", i ? "," : "",
			     out->items[i].name, out->items[i].version);
		if (w < 0 || (size_t)w >= sizeof(out->canon) - o)
			return errmsg_set(-ENAMETOOLONG, err, errlen, "canonical spec exceeds %d bytes",
					 SPEC_MAX_LEN - 1);
		o += (size_t)w;
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
		if (out->n == SPEC_MAX_ITEMS)
			return errmsg_set(-E2BIG, err, errlen, "too many packages in spec, max %d",
					 SPEC_MAX_ITEMS);
		rc = spec_parse_item(item, ilen, &out->items[out->n], err, errlen);
		if (rc < 0)
			return rc;
		out->n++;
		if (!comma)
			break;
		s = comma + 1;
	}

	qsort(out->items, (size_t)out->n, sizeof(out->items[0]), spec_item_cmp);
	for (int i = 1; i < out->n; i++)
		if (strcmp(out->items[i].name, out->items[i - 1].name) == 0)
			return errmsg_set(-EINVAL, err, errlen, "package '%s' appears more than once",
					 out->items[i].name);
	return spec_build_canon(out, err, errlen);
}
