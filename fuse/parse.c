/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The control file's command parser.  Pure: it touches only its arguments,
 * so it is safe from any thread and can be fuzzed on its own.
 *
 * A line is split on blanks (spaces and tabs) into tokens.  A token with a
 * ':' is a region, any other token after the verb is an option word.  All
 * regions come before the options.  Every check the engine would make at
 * submission (ranges, overlaps) is made here too, so a write with several
 * lines can be refused as a whole before any of its jobs is queued.
 */
#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"
#include "size.h"

struct token {
	const char *s;
	size_t len;
};

static int fail(char *errmsg, size_t errlen, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *errmsg, size_t errlen, int err, const char *fmt, ...)
{
	va_list ap;

	if (errlen) {
		va_start(ap, fmt);
		vsnprintf(errmsg, errlen, fmt, ap);
		va_end(ap);
	}
	return err;
}

/* Quote at most this many bytes of a token in a message. */
#define TOK_SHOWN 80
#define TOK_FMT "'%.*s%s'"
#define TOK_ARG(t)							\
	(int)((t).len > TOK_SHOWN ? TOK_SHOWN : (t).len), (t).s,	\
	(t).len > TOK_SHOWN ? "..." : ""

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

int kfs_valid_name(const char *name, size_t len)
{
	if (!len || len > KFS_MAX_NAME)
		return 0;
	if ((len == 1 || len == 2) && !memcmp(name, "..", len))
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!name_char(name[i]))
			return 0;
	return 1;
}

static bool token_is(struct token t, const char *word)
{
	return t.len == strlen(word) && !memcmp(t.s, word, t.len);
}

/* Decimal digits only: no sign, no blanks, no base prefix. */
static int parse_u64(const char *s, size_t len, uint64_t *v)
{
	uint64_t n = 0;

	if (!len)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		unsigned int d;

		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		d = (unsigned int)(s[i] - '0');
		if (n > (UINT64_MAX - d) / 10)
			return -EOVERFLOW;
		n = n * 10 + d;
	}
	*v = n;
	return 0;
}

/*
 * Sectors: plain digits (any 64-bit count), or a size with a unit
 * (size.h) that is whole sectors.  Returns 0, -EOVERFLOW (too large),
 * -EDOM (not whole sectors) or -EINVAL.
 */
static int parse_sectors(const char *s, size_t len, uint64_t *v)
{
	uint64_t bytes;
	size_t digits = 0;
	int r;

	while (digits < len && s[digits] >= '0' && s[digits] <= '9')
		digits++;
	if (digits == len)
		return parse_u64(s, len, v);
	r = size_parse_n(s, len, KCOPYD_SECTOR_SIZE, &bytes);
	if (r)
		return r == -ERANGE ? -EOVERFLOW : -EINVAL;
	if (bytes % KCOPYD_SECTOR_SIZE)
		return -EDOM;
	*v = bytes >> KCOPYD_SECTOR_SHIFT;
	return 0;
}

/*
 * One number of a region token, with a message on failure: sectors, or a
 * size with a unit (size.h) that is whole sectors.
 */
static int region_number(struct token t, const char *s, size_t len,
			 const char *what, uint64_t *v, char *errmsg,
			 size_t errlen)
{
	int r = parse_sectors(s, len, v);

	if (r == -EOVERFLOW)
		return fail(errmsg, errlen, -EINVAL,
			    "%s '%.*s' is too large in " TOK_FMT, what,
			    (int)len, s, TOK_ARG(t));
	if (r == -EDOM)
		return fail(errmsg, errlen, -EINVAL,
			    "%s '%.*s' is not a whole number of sectors in "
			    TOK_FMT, what, (int)len, s, TOK_ARG(t));
	if (r)
		return fail(errmsg, errlen, -EINVAL,
			    "%s '%.*s' is not a number of sectors or a size "
			    "(s, B, k, K, M, G, T, KiB..TiB) in " TOK_FMT,
			    what, (int)len, s, TOK_ARG(t));
	return 0;
}

/*
 * NAME:START+COUNT (with_count) or NAME:START.  Syntax first, then the
 * device, then the range: so each error names the first thing wrong.
 */
static int parse_region(struct token t, bool with_count,
			const struct kfs_devlookup *dl, uint64_t count,
			struct kfs_region *out, char *errmsg, size_t errlen)
{
	const char *colon = memchr(t.s, ':', t.len);
	const char *end = t.s + t.len;
	const char *plus;
	size_t name_len = (size_t)(colon - t.s);
	uint64_t size;
	int r;

	if (!kfs_valid_name(t.s, name_len))
		return fail(errmsg, errlen, -EINVAL,
			    "bad device name in " TOK_FMT, TOK_ARG(t));
	plus = memchr(colon + 1, '+', (size_t)(end - colon - 1));
	if (with_count && !plus)
		return fail(errmsg, errlen, -EINVAL,
			    "region " TOK_FMT " needs NAME:START+COUNT",
			    TOK_ARG(t));
	if (!with_count && plus)
		return fail(errmsg, errlen, -EINVAL,
			    "copy destination " TOK_FMT
			    " takes no count (NAME:START)", TOK_ARG(t));
	if (!plus)
		plus = end;
	r = region_number(t, colon + 1, (size_t)(plus - colon - 1), "start",
			  &out->sector, errmsg, errlen);
	if (r)
		return r;
	if (with_count) {
		r = region_number(t, plus + 1, (size_t)(end - plus - 1),
				  "count", &count, errmsg, errlen);
		if (r)
			return r;
	}
	out->count = count;

	r = dl->find(dl, t.s, name_len, &size);
	if (r < 0)
		return fail(errmsg, errlen, -ENOENT,
			    "unknown device '%.*s' in " TOK_FMT,
			    (int)name_len, t.s, TOK_ARG(t));
	out->dev = r;
	if (out->sector > size || out->count > size - out->sector)
		return fail(errmsg, errlen, -ERANGE,
			    "region " TOK_FMT " (%llu sectors) ends past the "
			    "end of '%.*s' (%llu sectors)", TOK_ARG(t),
			    (unsigned long long)out->count, (int)name_len, t.s,
			    (unsigned long long)size);
	return 0;
}

/*
 * The engine's rules for the job (overlaps, read-only devices), by the
 * engine's own check through the caller's hook: the parser keeps no copy
 * of them.  The message names the token at fault.
 */
static int check_job(const struct kfs_devlookup *dl, const struct kfs_cmd *c,
		     const struct token *regs, char *errmsg, size_t errlen)
{
	struct kfs_cmd plain;
	int culprit = -1, r;
	struct token t;

	if (!dl->check)
		return 0;
	r = dl->check(dl, c, &culprit);
	if (!r)
		return 0;
	t = regs[culprit < 0 ? 0 : culprit + (c->op == KFS_OP_COPY)];
	if (r == -EROFS)
		return fail(errmsg, errlen, r, "region " TOK_FMT " is on a "
			    "read-only device", TOK_ARG(t));
	if (r == -EBUSY)
		return fail(errmsg, errlen, r, "region " TOK_FMT " is on a "
			    "clone or a device under a clone", TOK_ARG(t));
	if (r != -EINVAL)
		return fail(errmsg, errlen, r, "region " TOK_FMT ": %s",
			    TOK_ARG(t), strerror(-r));
	if (culprit >= 0)
		return fail(errmsg, errlen, r, "destination " TOK_FMT
			    " overlaps another destination", TOK_ARG(t));
	plain = *c;
	plain.flags &= ~KFS_WRITE_SEQ;
	if ((c->flags & KFS_WRITE_SEQ) && !dl->check(dl, &plain, &culprit))
		return fail(errmsg, errlen, r, "write_seq with a destination "
			    "overlapping the source " TOK_FMT " above it",
			    TOK_ARG(t));
	return fail(errmsg, errlen, r, "destinations overlap the source "
		    TOK_FMT " on both sides", TOK_ARG(t));
}

static int parse_option(struct token t, struct kfs_cmd *c, char *errmsg,
			size_t errlen)
{
	static const struct {
		const char *word;
		unsigned int flag;
		bool copy_only;
	} words[] = {
		{ "ignore_errors", KFS_IGNORE_ERRORS, true },
		{ "write_seq", KFS_WRITE_SEQ, true },
		{ "sync", KFS_SYNC, false },
		{ "flush", KFS_FLUSH, false },
		{ "verify", KFS_VERIFY, false },
		{ "checksum", KFS_CHECKSUM, true },
	};

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		if (!token_is(t, words[i].word))
			continue;
		if (words[i].copy_only && c->op != KFS_OP_COPY)
			return fail(errmsg, errlen, -EINVAL,
				    "option " TOK_FMT " is for copy only",
				    TOK_ARG(t));
		if (c->flags & words[i].flag)
			return fail(errmsg, errlen, -EINVAL,
				    "option " TOK_FMT " given twice",
				    TOK_ARG(t));
		c->flags |= words[i].flag;
		return 0;
	}
	if (t.len >= 4 && !memcmp(t.s, "tag=", 4)) {
		if (c->tag[0])
			return fail(errmsg, errlen, -EINVAL,
				    "option " TOK_FMT " given twice",
				    TOK_ARG(t));
		if (!kfs_valid_name(t.s + 4, t.len - 4))
			return fail(errmsg, errlen, -EINVAL,
				    "bad tag in " TOK_FMT
				    " (1 to %d of A-Z a-z 0-9 _ . -)",
				    TOK_ARG(t), KFS_MAX_NAME);
		memcpy(c->tag, t.s + 4, t.len - 4);
		c->tag[t.len - 4] = '\0';
		return 0;
	}
	return fail(errmsg, errlen, -EINVAL, "unknown word " TOK_FMT,
		    TOK_ARG(t));
}

/* Bytes a command may hold: printable ASCII and blanks. */
int kfs_check_bytes(const char *s, size_t len, char *errmsg, size_t errlen)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (!ch)
			return fail(errmsg, errlen, -EINVAL,
				    "NUL byte at offset %zu", i);
		if ((ch < 0x20 && ch != '\t' && ch != '\n') || ch > 0x7e)
			return fail(errmsg, errlen, -EINVAL,
				    "binary byte 0x%02x at offset %zu", ch, i);
	}
	return 0;
}

static size_t next_token(const char *line, size_t len, size_t pos,
			 struct token *t)
{
	while (pos < len && is_blank(line[pos]))
		pos++;
	t->s = line + pos;
	while (pos < len && !is_blank(line[pos]))
		pos++;
	t->len = (size_t)(line + pos - t->s);
	return pos;
}

/*
 * The one argument of cmd into t: -EINVAL if there is none (the message
 * says what cmd needs) or if another word follows it.
 */
static int one_arg(const char *line, size_t len, size_t pos, struct token *t,
		   const char *cmd, const char *needs, char *errmsg,
		   size_t errlen)
{
	struct token extra;

	pos = next_token(line, len, pos, t);
	next_token(line, len, pos, &extra);
	if (!t->len)
		return fail(errmsg, errlen, -EINVAL, "%s needs %s", cmd,
			    needs);
	if (extra.len)
		return fail(errmsg, errlen, -EINVAL,
			    "unknown word " TOK_FMT " after %s",
			    TOK_ARG(extra), cmd);
	return 0;
}

/* cancel ID | cancel tag=WORD: one argument, nothing after it. */
static int parse_cancel(const char *line, size_t len, size_t pos,
			struct kfs_cmd *out, char *errmsg, size_t errlen)
{
	struct token t;
	int r;

	r = one_arg(line, len, pos, &t, "cancel", "a job ID or tag=WORD",
		    errmsg, errlen);
	if (r)
		return r;
	if (t.len >= 4 && !memcmp(t.s, "tag=", 4))
		return parse_option(t, out, errmsg, errlen);
	r = parse_u64(t.s, t.len, &out->cancel_id);
	if (r || !out->cancel_id)
		return fail(errmsg, errlen, -EINVAL,
			    "bad job id " TOK_FMT " (a number from 1)",
			    TOK_ARG(t));
	return 0;
}

/* throttle RATE (a size per second) | throttle PCT% | throttle off */
static int parse_throttle(const char *line, size_t len, size_t pos,
			  struct kfs_cmd *out, char *errmsg, size_t errlen)
{
	struct token t;
	uint64_t v;
	int r;

	r = one_arg(line, len, pos, &t, "throttle", "RATE, PCT% or off",
		    errmsg, errlen);
	if (r)
		return r;
	if (token_is(t, "off"))
		return 0;
	if (t.s[t.len - 1] == '%') {
		if (parse_u64(t.s, t.len - 1, &v) || v < 1 || v > 100)
			return fail(errmsg, errlen, -EINVAL,
				    "bad share " TOK_FMT " (1%% to 100%%)",
				    TOK_ARG(t));
		out->percent = v == 100 ? 0 : (unsigned int)v;
		return 0;
	}
	if (size_parse_n(t.s, t.len, 1, &v) || v < KCOPYD_SECTOR_SIZE)
		return fail(errmsg, errlen, -EINVAL,
			    "bad rate " TOK_FMT " (bytes per second with a "
			    "unit, such as 64M, at least 512)", TOK_ARG(t));
	out->rate = v;
	return 0;
}

int kfs_parse_line(const char *line, size_t len,
		   const struct kfs_devlookup *dl, struct kfs_cmd *out,
		   char *errmsg, size_t errlen)
{
	/* The source and every destination, for messages. */
	struct token regs[KFS_MAX_DESTS + 1];
	unsigned int nregs = 0;
	bool in_options = false;
	struct token t;
	size_t pos;
	int r;

	memset(out, 0, sizeof(*out));
	if (errlen)
		errmsg[0] = '\0';
	if (len > KFS_MAX_LINE)
		return fail(errmsg, errlen, -EFBIG,
			    "line of %zu bytes is longer than %d", len,
			    KFS_MAX_LINE);
	r = kfs_check_bytes(line, len, errmsg, errlen);
	if (r)
		return r;
	if (memchr(line, '\n', len))
		return fail(errmsg, errlen, -EINVAL, "newline inside a line");

	pos = next_token(line, len, 0, &t);
	if (!t.len)
		return 0;
	if (token_is(t, "copy")) {
		out->op = KFS_OP_COPY;
	} else if (token_is(t, "zero")) {
		out->op = KFS_OP_ZERO;
	} else if (token_is(t, "cancel")) {
		out->op = KFS_OP_CANCEL;
		return parse_cancel(line, len, pos, out, errmsg, errlen);
	} else if (token_is(t, "throttle")) {
		out->op = KFS_OP_THROTTLE;
		return parse_throttle(line, len, pos, out, errmsg, errlen);
	} else {
		return fail(errmsg, errlen, -EINVAL,
			    "unknown command " TOK_FMT " (copy, zero, cancel "
			    "or throttle)", TOK_ARG(t));
	}

	for (;;) {
		pos = next_token(line, len, pos, &t);
		if (!t.len)
			break;
		if (!memchr(t.s, ':', t.len)) {
			in_options = true;
			r = parse_option(t, out, errmsg, errlen);
			if (r)
				return r;
			continue;
		}
		if (in_options)
			return fail(errmsg, errlen, -EINVAL,
				    "region " TOK_FMT " after an option",
				    TOK_ARG(t));
		if (out->op == KFS_OP_COPY && nregs == 0) {
			r = parse_region(t, true, dl, 0, &out->src, errmsg,
					 errlen);
		} else {
			if (out->num_dests == KFS_MAX_DESTS)
				return fail(errmsg, errlen, -E2BIG,
					    "more than %d destinations at "
					    TOK_FMT, KFS_MAX_DESTS,
					    TOK_ARG(t));
			r = parse_region(t, out->op == KFS_OP_ZERO, dl,
					 out->src.count,
					 &out->dests[out->num_dests], errmsg,
					 errlen);
			out->num_dests++;
		}
		if (r)
			return r;
		regs[nregs++] = t;
	}

	if (!out->num_dests)
		return fail(errmsg, errlen, -EINVAL, "%s needs %s",
			    out->op == KFS_OP_COPY ? "copy" : "zero",
			    out->op == KFS_OP_COPY && !nregs ?
			    "SRC:START+COUNT and a destination" :
			    out->op == KFS_OP_COPY ? "a destination DST:START" :
			    "a region DST:START+COUNT");
	return check_job(dl, out, regs, errmsg, errlen);
}

int kfs_parse_write(const char *buf, size_t len,
		    const struct kfs_devlookup *dl, struct kfs_cmd *cmds,
		    unsigned int max_cmds, unsigned int *ncmds,
		    char *errmsg, size_t errlen)
{
	const char *end = buf + len;
	const char *p = buf;
	bool several;
	unsigned int lineno = 0;
	char msg[512];
	int r;

	*ncmds = 0;
	if (errlen)
		errmsg[0] = '\0';
	if (len > KFS_MAX_BATCH)
		return fail(errmsg, errlen, -EFBIG,
			    "batch of %zu bytes is larger than %d", len,
			    KFS_MAX_BATCH);
	r = kfs_check_bytes(buf, len, errmsg, errlen);
	if (r)
		return r;
	/* One line, with or without its newline, needs no line number. */
	several = len && memchr(buf, '\n', len) &&
		  (const char *)memchr(buf, '\n', len) + 1 < end;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *eol = nl ? nl : end;
		struct kfs_cmd cmd;

		lineno++;
		r = kfs_parse_line(p, (size_t)(eol - p), dl, &cmd, msg,
				   sizeof(msg));
		if (r) {
			if (several)
				return fail(errmsg, errlen, r, "line %u: %s",
					    lineno, msg);
			return fail(errmsg, errlen, r, "%s", msg);
		}
		if (cmd.op != KFS_OP_NONE) {
			if (*ncmds == max_cmds)
				return fail(errmsg, errlen, -EFBIG,
					    "more than %u commands in one "
					    "write", max_cmds);
			cmds[(*ncmds)++] = cmd;
		}
		p = nl ? nl + 1 : end;
	}
	return 0;
}

int kfs_parse_size(const char *s, uint64_t *bytes)
{
	return size_parse(s, 1, bytes) ? -EINVAL : 0;
}

static const struct {
	const char *name;
	int err;
} errno_names[] = {
	{ "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EROFS", EROFS },
	{ "EPERM", EPERM }, { "EACCES", EACCES }, { "ENOMEM", ENOMEM },
	{ "EINVAL", EINVAL }, { "ENXIO", ENXIO }, { "ENODEV", ENODEV },
	{ "EAGAIN", EAGAIN }, { "EBUSY", EBUSY }, { "ETIMEDOUT", ETIMEDOUT },
	{ "EREMOTEIO", EREMOTEIO }, { "EILSEQ", EILSEQ },
	{ "EBADMSG", EBADMSG }, { "ENOTSUP", ENOTSUP },
};

static int parse_fault_kind(const char *s, struct kcopyd_fault *out)
{
	uint64_t v;

	out->kind = KCOPYD_FAULT_ERROR;
	out->error = EIO;
	if (!*s)
		return 0;
	if (!strcmp(s, "corrupt")) {
		out->kind = KCOPYD_FAULT_CORRUPT;
		out->error = 0;
		return 0;
	}
	if (!strcmp(s, "short")) {
		out->kind = KCOPYD_FAULT_SHORT;
		out->error = 0;
		return 0;
	}
	if (!strncmp(s, "delay=", 6)) {
		if (parse_u64(s + 6, strlen(s + 6), &v) || v > UINT32_MAX)
			return -EINVAL;
		out->kind = KCOPYD_FAULT_DELAY;
		out->error = 0;
		out->delay_us = (unsigned int)v;
		return 0;
	}
	for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]);
	     i++) {
		if (!strcmp(s, errno_names[i].name)) {
			out->error = errno_names[i].err;
			return 0;
		}
	}
	if (parse_u64(s, strlen(s), &v) || v == 0 || v > 4095)
		return -EINVAL;
	out->error = (int)v;
	return 0;
}

int kfs_parse_fault(const char *spec, char *name, size_t namelen,
		    struct kcopyd_fault *out, char *errmsg, size_t errlen)
{
	const char *c1 = strchr(spec, ':');
	const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
	const char *c3 = c2 ? strchr(c2 + 1, ':') : NULL;
	const char *plus, *range_end;
	size_t ops_len;

	memset(out, 0, sizeof(*out));
	if (errlen)
		errmsg[0] = '\0';
	if (!c2)
		return fail(errmsg, errlen, -EINVAL,
			    "fault '%s' is not NAME:read|write|rw:START+COUNT"
			    "[:KIND]", spec);
	if (!kfs_valid_name(spec, (size_t)(c1 - spec)) ||
	    (size_t)(c1 - spec) >= namelen)
		return fail(errmsg, errlen, -EINVAL,
			    "bad device name in fault '%s'", spec);
	memcpy(name, spec, (size_t)(c1 - spec));
	name[c1 - spec] = '\0';

	ops_len = (size_t)(c2 - c1 - 1);
	if (ops_len == 4 && !memcmp(c1 + 1, "read", 4))
		out->ops = KCOPYD_FAULT_READ;
	else if (ops_len == 5 && !memcmp(c1 + 1, "write", 5))
		out->ops = KCOPYD_FAULT_WRITE;
	else if (ops_len == 2 && !memcmp(c1 + 1, "rw", 2))
		out->ops = KCOPYD_FAULT_READ | KCOPYD_FAULT_WRITE;
	else
		return fail(errmsg, errlen, -EINVAL,
			    "fault '%s': operation is not read, write or rw",
			    spec);

	range_end = c3 ? c3 : spec + strlen(spec);
	plus = memchr(c2 + 1, '+', (size_t)(range_end - c2 - 1));
	if (!plus ||
	    parse_sectors(c2 + 1, (size_t)(plus - c2 - 1), &out->sector) ||
	    parse_sectors(plus + 1, (size_t)(range_end - plus - 1),
			  &out->count) ||
	    !out->count || out->sector + out->count < out->sector)
		return fail(errmsg, errlen, -EINVAL,
			    "fault '%s': range is not START+COUNT", spec);
	if (parse_fault_kind(c3 ? c3 + 1 : "", out))
		return fail(errmsg, errlen, -EINVAL,
			    "fault '%s': kind is not an errno, short, "
			    "corrupt or delay=USEC", spec);
	return 0;
}

static int admin_verb(struct token t)
{
	if (token_is(t, "attach"))
		return KFS_ADMIN_ATTACH;
	if (token_is(t, "detach"))
		return KFS_ADMIN_DETACH;
	if (token_is(t, "wait"))
		return KFS_ADMIN_WAIT;
	return KFS_ADMIN_NONE;
}

static int parse_admin_args(const char *line, size_t len, size_t pos,
			    struct kfs_admin *out, char *errmsg,
			    size_t errlen)
{
	static const char *const usage[] = {
		[KFS_ADMIN_ATTACH] = "attach NAME PATH [ro]",
		[KFS_ADMIN_DETACH] = "detach NAME",
		[KFS_ADMIN_WAIT] = "wait ID",
	};
	struct token t[4];
	unsigned int n = 0, want = out->op == KFS_ADMIN_ATTACH ? 2 : 1;

	for (;;) {
		struct token tok;

		pos = next_token(line, len, pos, &tok);
		if (!tok.len)
			break;
		if (n == 3)
			return fail(errmsg, errlen, -EINVAL, "extra word "
				    TOK_FMT " (%s)", TOK_ARG(tok),
				    usage[out->op]);
		t[n++] = tok;
	}
	if (n < want)
		return fail(errmsg, errlen, -EINVAL, "usage: %s",
			    usage[out->op]);
	if (n > want && !(out->op == KFS_ADMIN_ATTACH && n == 3 &&
			  token_is(t[2], "ro")))
		return fail(errmsg, errlen, -EINVAL, "extra word " TOK_FMT
			    " (%s)", TOK_ARG(t[want]), usage[out->op]);
	if (out->op == KFS_ADMIN_WAIT) {
		if (parse_u64(t[0].s, t[0].len, &out->id))
			return fail(errmsg, errlen, -EINVAL, "bad job id "
				    TOK_FMT, TOK_ARG(t[0]));
		return 0;
	}
	if (!kfs_valid_name(t[0].s, t[0].len))
		return fail(errmsg, errlen, -EINVAL, "bad device name " TOK_FMT
			    " (1 to %d of A-Z a-z 0-9 _ . -)", TOK_ARG(t[0]),
			    KFS_MAX_NAME);
	memcpy(out->name, t[0].s, t[0].len);
	out->name[t[0].len] = '\0';
	if (out->op == KFS_ADMIN_ATTACH) {
		memcpy(out->path, t[1].s, t[1].len);
		out->path[t[1].len] = '\0';
		out->ro = n == 3;
	}
	return 0;
}

int kfs_parse_admin(const char *buf, size_t len, struct kfs_admin *out,
		    char *errmsg, size_t errlen)
{
	const char *end = buf + len, *p = buf, *line = NULL;
	size_t line_len = 0, pos = 0;
	unsigned int lines = 0;
	int r;

	memset(out, 0, sizeof(*out));
	if (errlen)
		errmsg[0] = '\0';
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *eol = nl ? nl : end;
		struct token t;
		size_t after = next_token(p, (size_t)(eol - p), 0, &t);
		int op = admin_verb(t);

		if (t.len)
			lines++;
		if (op != KFS_ADMIN_NONE && !out->op) {
			out->op = op;
			line = p;
			line_len = (size_t)(eol - p);
			pos = after;
		}
		p = nl ? nl + 1 : end;
	}
	if (!out->op)
		return 0;
	if (lines > 1)
		return fail(errmsg, errlen, -EINVAL, "%s must be alone in a "
			    "write", out->op == KFS_ADMIN_ATTACH ? "attach" :
			    out->op == KFS_ADMIN_DETACH ? "detach" : "wait");
	if (line_len > KFS_MAX_LINE)
		return fail(errmsg, errlen, -EFBIG,
			    "line of %zu bytes is longer than %d", line_len,
			    KFS_MAX_LINE);
	r = kfs_check_bytes(line, line_len, errmsg, errlen);
	if (r)
		return r;
	return parse_admin_args(line, line_len, pos, out, errmsg, errlen);
}
