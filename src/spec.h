/*
 * spec.h - package specs: "base", or items separated by ',', each one of
 *
 *   name                any version: see bubble.h for which one serves it
 *   name==version       an exact pin
 *   name OP version     a PEP 440 comparison, OP one of ~= == >= > <= < !=
 *
 * An item that starts with an operator adds a constraint to the item
 * before it: "numpy>=1.26,<2".  An item with an "==" constraint is pinned
 * to that version; its other constraints must hold for that version, and
 * it is "name==version" from then on.  Refused, with the reason: "===",
 * wildcards ("==1.*", "!=1.*"), "~=" with one release segment, an
 * unpinned item named "base" (a bare "base" is the base environment), a
 * name given twice, more than SPEC_MAX_CONSTRAINTS constraints for one
 * name.
 *
 * Canonical form: names normalised as PEP 503 says (lower case, each run of
 * '-', '_', '.' becomes one '-'), items sorted by name, an item's
 * constraints sorted (by operator in the order above, then by version
 * text) without repeats, all joined by ','.  Every byte is validated, so a
 * canonical spec is safe to use as a path component.
 *
 * Versions.  A pin may be any version text of letters, digits, '.', '+'
 * and '!' that starts with a digit (it names a bubble directory, matched
 * as text).  Any other constraint's version must be a PEP 440 version:
 * [N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local], with PEP 440's spellings
 * (alpha, beta, c, pre, preview, rev, r; an omitted number is 0; '.'
 * optional before a suffix; letters in any case).  Ordering is PEP 440's:
 * epoch, then release segments compared as numbers with the shorter one
 * padded with zeros (1.26 == 1.26.0), then 1.0.dev1 < 1.0a1 < 1.0b1 <
 * 1.0rc1 < 1.0 < 1.0.post1, a dev release just before the release it
 * precedes; local labels only break ties, compared as text.  "<V" leaves
 * out V's pre-releases and ">V" V's post-releases (unless V is one);
 * "==V"/"!=V" ignore a candidate's local label unless V has one; ordered
 * comparisons ignore local labels.  Numbers longer than 18 digits, more
 * than 32 release segments or any other text are not PEP 440 versions
 * here: such a constraint is refused, and such a candidate never matches.
 */
#ifndef OMNI_SPEC_H
#define OMNI_SPEC_H

#include <stddef.h>

#define SPEC_MAX_LEN 1024     /* input and canonical text, NUL included */
#define SPEC_MAX_ITEMS 16
#define SPEC_MAX_CONSTRAINTS 8
#define SPEC_NAME_MAX 100
#define SPEC_VERSION_MAX 64

/* In canonical order. */
enum spec_op { SPEC_COMPAT, SPEC_EQ, SPEC_GE, SPEC_GT, SPEC_LE, SPEC_LT, SPEC_NE, SPEC_NOPS };

struct spec_constraint {
	int op;                             /* enum spec_op */
	char version[SPEC_VERSION_MAX + 1];
};

struct spec_item {
	char name[SPEC_NAME_MAX + 1];       /* normalised */
	char version[SPEC_VERSION_MAX + 1]; /* the exact pin; "" when unpinned */
	int ncons;                          /* unpinned: 0 for a bare name */
	struct spec_constraint cons[SPEC_MAX_CONSTRAINTS];
};

struct spec {
	int n;                              /* 0 means "base" */
	struct spec_item items[SPEC_MAX_ITEMS];
	char canon[SPEC_MAX_LEN];
};

/*
 * Parses and canonicalises `in` (len bytes; embedded NUL is an error).
 * Returns 0, or -EINVAL / -ENAMETOOLONG / -E2BIG with a readable reason
 * in err (which may be NULL).
 */
int spec_parse(const char *in, size_t len, struct spec *out, char *err, size_t errlen);

/* PEP 503 normalisation of one name into out (n bytes); -EINVAL if invalid. */
int spec_normalize_name(const char *name, size_t len, char *out, size_t n);

/* One item in canonical form ("numpy>=1.26,<2") into buf; 0 or -ENAMETOOLONG. */
int spec_item_str(const struct spec_item *it, char *buf, size_t n);

/* <0, 0 or >0 as a sorts before, with or after b in PEP 440 order (above).
 * Text that is not a PEP 440 version sorts before every version, and
 * among such text by strcmp: a total order for any two strings. */
int spec_version_cmp(const char *a, const char *b);

/*
 * 1 if version may serve it, else 0.  A pinned item allows exactly its own
 * version text.  An unpinned one allows a PEP 440 version that satisfies
 * every constraint and, if it is a pre-release (a, b, rc or dev), only
 * when one of the constraints names a pre-release, as pip does.
 */
int spec_item_allows(const struct spec_item *it, const char *version);

#endif
