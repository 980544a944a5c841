/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Node service's decisions that need no system call (docs/design.md,
 * "The CSI driver", Node): what the first blocks of a device hold (the
 * mkfs rule), a capability's mount flags as mount(2)'s flags and data,
 * a line of /proc/self/mountinfo, and the staging record's file name and
 * JSON form. Unit-tested in tests/unit/test-csi-unit.c.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>

#include "internal.h"

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

enum csi_fs_probe csi_fs_probe(const uint8_t *buf, size_t n, char *type, size_t tlen)
{
	snprintf(type, tlen, "%s", "");
	/* ext2/3/4: the superblock at 1024, magic 0xEF53 at its byte 56;
	 * ext4 when it uses extents or 64-bit, ext3 with a journal. */
	if (n >= 2048 && le16(buf + 1024 + 56) == 0xEF53) {
		uint32_t compat = le32(buf + 1024 + 0x5c), incompat = le32(buf + 1024 + 0x60);

		snprintf(type, tlen, "%s", incompat & (0x40 | 0x80 | 0x200) ? "ext4" :
			 compat & 0x4 ? "ext3" : "ext2");
		return CSI_FS_FOUND;
	}
	if (n >= 4 && memcmp(buf, "XFSB", 4) == 0) {
		snprintf(type, tlen, "xfs");
		return CSI_FS_FOUND;
	}
	if (n >= 0x10048 && memcmp(buf + 0x10040, "_BHRfS_M", 8) == 0) {
		snprintf(type, tlen, "btrfs");
		return CSI_FS_FOUND;
	}
	if (n >= 6 && memcmp(buf, "LUKS\xba\xbe", 6) == 0) {
		snprintf(type, tlen, "crypto_LUKS");
		return CSI_FS_FOUND;
	}
	if (n >= 4096 && memcmp(buf + 4086, "SWAPSPACE2", 10) == 0) {
		snprintf(type, tlen, "swap");
		return CSI_FS_FOUND;
	}
	if (n >= 512 && buf[510] == 0x55 && buf[511] == 0xAA) {
		snprintf(type, tlen, "a partition table");
		return CSI_FS_DATA;
	}
	for (size_t i = 0; i < n; i++)
		if (buf[i]) {
			snprintf(type, tlen, "data (byte %zu is not zero)", i);
			return CSI_FS_DATA;
		}
	return CSI_FS_EMPTY;
}

static const struct {
	const char *name;
	unsigned long set, clear;
} mount_flag_names[] = {
	{ "ro", MS_RDONLY, 0 },          { "rw", 0, MS_RDONLY },
	{ "nosuid", MS_NOSUID, 0 },      { "suid", 0, MS_NOSUID },
	{ "nodev", MS_NODEV, 0 },        { "dev", 0, MS_NODEV },
	{ "noexec", MS_NOEXEC, 0 },      { "exec", 0, MS_NOEXEC },
	{ "sync", MS_SYNCHRONOUS, 0 },   { "async", 0, MS_SYNCHRONOUS },
	{ "dirsync", MS_DIRSYNC, 0 },    { "noatime", MS_NOATIME, 0 },
	{ "atime", 0, MS_NOATIME },      { "nodiratime", MS_NODIRATIME, 0 },
	{ "diratime", 0, MS_NODIRATIME }, { "relatime", MS_RELATIME, 0 },
	{ "norelatime", 0, MS_RELATIME }, { "strictatime", MS_STRICTATIME, 0 },
	{ "lazytime", MS_LAZYTIME, 0 },  { "nolazytime", 0, MS_LAZYTIME },
};

int csi_mount_flags(char *const *flags, size_t n, bool readonly, unsigned long *ms,
		    char *data, size_t dlen, char *why, size_t wlen)
{
	size_t used = 0;

	*ms = readonly ? MS_RDONLY : 0;
	data[0] = 0;
	for (size_t i = 0; i < n; i++) {
		const char *f = flags[i];
		bool known = false;

		if (!*f || strcmp(f, "defaults") == 0)
			continue;
		if (strcmp(f, "bind") == 0 || strcmp(f, "rbind") == 0 || strcmp(f, "remount") == 0 ||
		    strcmp(f, "move") == 0 || strchr(f, ',')) {
			snprintf(why, wlen, "mount flag '%s' is not one the driver may pass "
				 "(one option per entry; bind, remount and move are the driver's)", f);
			return -EINVAL;
		}
		for (size_t k = 0; k < sizeof mount_flag_names / sizeof mount_flag_names[0]; k++)
			if (strcmp(f, mount_flag_names[k].name) == 0) {
				*ms = (*ms | mount_flag_names[k].set) & ~mount_flag_names[k].clear;
				known = true;
				break;
			}
		if (known)
			continue;
		/* The filesystem's own option (discard, errors=remount-ro, ...). */
		int w = snprintf(data + used, dlen - used, "%s%s", used ? "," : "", f);
		if (w < 0 || (size_t)w >= dlen - used) {
			snprintf(why, wlen, "mount flags too long");
			return -E2BIG;
		}
		used += (size_t)w;
	}
	if (readonly)
		*ms |= MS_RDONLY;
	return 0;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = 0;
}

int csi_mountinfo_parse(const char *line, struct csi_mountinfo *mi)
{
	char root[1024], mnt[1024], fstype[64], src[1024];
	const char *sep = strstr(line, " - ");

	memset(mi, 0, sizeof *mi);
	/* id parent major:minor root mountpoint options [optional...] - fstype source ... */
	if (!sep || sscanf(line, "%*u %*u %u:%u %1023s %1023s", &mi->major, &mi->minor, root,
			   mnt) != 4 ||
	    sscanf(sep + 3, "%63s %1023s", fstype, src) != 2)
		return -EINVAL;
	unescape(root);
	unescape(mnt);
	unescape(src);
	memcpy(mi->root, root, sizeof mi->root);
	memcpy(mi->mountpoint, mnt, sizeof mi->mountpoint);
	memcpy(mi->fstype, fstype, sizeof mi->fstype);
	memcpy(mi->source, src, sizeof mi->source);
	/* the per-mount options: ro or rw first */
	const char *opts = line;
	for (int field = 0; field < 5 && opts; field++) {
		opts = strchr(opts, ' ');
		if (opts)
			opts++;
	}
	mi->readonly = opts && strncmp(opts, "ro", 2) == 0 && (opts[2] == ',' || opts[2] == ' ');
	return 0;
}

void csi_state_file(char *out, size_t len, const char *dir, const char *volume_id)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = (size_t)snprintf(out, len, "%s/", dir);

	for (const char *p = volume_id; *p && o + 4 < len; p++) {
		unsigned char ch = (unsigned char)*p;

		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		    ((ch == '.' || ch == '_' || ch == '-') && p != volume_id)) {
			out[o++] = (char)ch;
		} else {
			out[o++] = '%';
			out[o++] = hex[ch >> 4];
			out[o++] = hex[ch & 15];
		}
	}
	snprintf(out + o, len - o, ".json");
}

char *csi_stage_to_json(const struct csi_stage *s)
{
	json_object *o = json_object_new_object();
	char *out;

	json_object_object_add(o, "volume_id", json_object_new_string(s->volume_id));
	json_object_object_add(o, "volume", json_object_new_string(s->volume));
	json_object_object_add(o, "device", json_object_new_string(s->device));
	json_object_object_add(o, "staging_target_path", json_object_new_string(s->staging));
	json_object_object_add(o, "access", json_object_new_string(s->block ? "block" : "mount"));
	json_object_object_add(o, "fs_type", json_object_new_string(s->fs_type));
	out = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return out;
}

static bool str_field(json_object *o, const char *key, char *out, size_t len, bool need)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string)) {
		out[0] = 0;
		return !need;
	}
	const char *s = json_object_get_string(v);
	if (strlen(s) >= len)
		return false;
	snprintf(out, len, "%s", s);
	return !need || *s;
}

int csi_stage_from_json(const char *text, struct csi_stage *s)
{
	json_object *o = json_tokener_parse(text);
	char access[16];
	int r = -EINVAL;

	memset(s, 0, sizeof *s);
	if (!o)
		return -EINVAL;
	if (json_object_is_type(o, json_type_object) &&
	    str_field(o, "volume_id", s->volume_id, sizeof s->volume_id, true) &&
	    str_field(o, "volume", s->volume, sizeof s->volume, true) &&
	    str_field(o, "device", s->device, sizeof s->device, true) &&
	    str_field(o, "staging_target_path", s->staging, sizeof s->staging, true) &&
	    str_field(o, "access", access, sizeof access, true) &&
	    str_field(o, "fs_type", s->fs_type, sizeof s->fs_type, false) &&
	    (strcmp(access, "block") == 0 || strcmp(access, "mount") == 0) &&
	    strncmp(s->device, "/dev/", 5) == 0) {
		s->block = strcmp(access, "block") == 0;
		r = 0;
	}
	json_object_put(o);
	return r;
}
