/*
 * The floor of `forwarder-sriov inventory` (crates/pci/benches/inventory.rs):
 * the fewest reads that print the same table of PFs, VFs and other devices
 * from a PCI devices directory (argv[1]). Every path is opened relative to
 * the devices directory's fd, a VF's facts are its three entries (driver and
 * iommu_group links, net directory), and the output is written once.
 *
 * Build: cc -O2 -o inventory-floor inventory_floor.c
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static char *out;
static size_t out_len, out_cap;

static void emit(const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(out + out_len, out_cap - out_len, fmt, ap);
        va_end(ap);
        if (n < 0) exit(2);
        if ((size_t)n < out_cap - out_len) {
            out_len += (size_t)n;
            return;
        }
        out_cap = out_cap * 2 + (size_t)n + 1;
        out = realloc(out, out_cap);
        if (!out) exit(2);
    }
}

static int devfd;

/* A small attribute without "0x" and the newline; "" when absent. */
static int attr(const char *dev, const char *name, char *buf, size_t len) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dev, name);
    int fd = openat(devfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        buf[0] = 0;
        return 0;
    }
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n < 0) n = 0;
    buf[n] = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) buf[--n] = 0;
    if (buf[0] == '0' && buf[1] == 'x') memmove(buf, buf + 2, (size_t)n - 1);
    return 1;
}

/* The last component of a link's target; "-" when there is no link. */
static void link_name(const char *dev, const char *name, char *buf, size_t len) {
    char path[128], target[256];
    snprintf(path, sizeof path, "%s/%s", dev, name);
    ssize_t n = readlinkat(devfd, path, target, sizeof target - 1);
    if (n <= 0) {
        snprintf(buf, len, "-");
        return;
    }
    target[n] = 0;
    char *slash = strrchr(target, '/');
    snprintf(buf, len, "%s", slash ? slash + 1 : target);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Entries of a directory through getdents64 itself: opendir(3) would add an
 * fstat and an fcntl per directory, which are not reads the listing needs.
 * Calls `each` for every name but "." and "..".
 */
struct linux_dirent64 {
    unsigned long long d_ino;
    long long d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

static void list_dir(int fd, void (*each)(const char *, void *), void *ctx) {
    static char buf[32768];
    for (;;) {
        long n = syscall(SYS_getdents64, fd, buf, sizeof buf);
        if (n <= 0) return;
        for (long at = 0; at < n;) {
            struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + at);
            at += d->d_reclen;
            if (d->d_name[0] == '.' &&
                (d->d_name[1] == 0 || (d->d_name[1] == '.' && d->d_name[2] == 0)))
                continue;
            each(d->d_name, ctx);
        }
    }
}

struct names {
    char **v;
    size_t n, cap;
};

static void push_name(const char *name, void *ctx) {
    struct names *ns = ctx;
    if (ns->n == ns->cap) {
        ns->cap = ns->cap * 2 + 16;
        ns->v = realloc(ns->v, ns->cap * sizeof *ns->v);
        if (!ns->v) exit(2);
    }
    ns->v[ns->n++] = strdup(name);
}

/* The device's interfaces, sorted and comma-joined; "-" when none. */
static void netdevs(const char *dev, char *buf, size_t len) {
    char path[128];
    snprintf(path, sizeof path, "%s/net", dev);
    snprintf(buf, len, "-");
    int fd = openat(devfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    struct names ns = {0};
    list_dir(fd, push_name, &ns);
    close(fd);
    if (ns.n == 0) return;
    qsort(ns.v, ns.n, sizeof *ns.v, cmp_str);
    size_t at = 0;
    buf[0] = 0;
    for (size_t i = 0; i < ns.n; i++) {
        if (at < len) at += (size_t)snprintf(buf + at, len - at, "%s%s", i ? "," : "", ns.v[i]);
        free(ns.v[i]);
    }
    free(ns.v);
}

struct vf {
    unsigned index;
    char addr[16];
};

static int cmp_vf(const void *a, const void *b) {
    const struct vf *x = a, *y = b;
    return (x->index > y->index) - (x->index < y->index);
}

struct virtfns {
    int dirfd;
    struct vf *v;
    size_t n, cap;
};

/* A PF's `virtfnN` entry: its index and the VF address it links to. */
static void push_virtfn(const char *name, void *ctx) {
    struct virtfns *vs = ctx;
    if (strncmp(name, "virtfn", 6) != 0) return;
    char *end;
    unsigned long idx = strtoul(name + 6, &end, 10);
    if (*end || end == name + 6) return;
    char target[64];
    ssize_t len = readlinkat(vs->dirfd, name, target, sizeof target - 1);
    if (len <= 0) return;
    target[len] = 0;
    char *slash = strrchr(target, '/');
    if (vs->n == vs->cap) {
        vs->cap = vs->cap * 2 + 64;
        vs->v = realloc(vs->v, vs->cap * sizeof *vs->v);
        if (!vs->v) exit(2);
    }
    vs->v[vs->n].index = (unsigned)idx;
    snprintf(vs->v[vs->n].addr, sizeof vs->v[vs->n].addr, "%s", slash ? slash + 1 : target);
    vs->n++;
}

static char **vf_names;
static size_t vf_count, vf_cap;

static int is_known_vf(const char *name) {
    return vf_count &&
           bsearch(&name, vf_names, vf_count, sizeof *vf_names, cmp_str) != NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <pci devices dir>\n", argv[0]);
        return 2;
    }
    devfd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (devfd < 0) {
        perror(argv[1]);
        return 1;
    }
    struct names all = {0};
    list_dir(devfd, push_name, &all);
    char **names = all.v;
    size_t n = all.n;
    qsort(names, n, sizeof *names, cmp_str);

    out_cap = 1 << 20;
    out = malloc(out_cap);
    char **others = malloc((n + 1) * sizeof *others);
    size_t n_others = 0, n_pfs = 0;
    /* PF lines go after their header, whose count is known at the end. */
    char *pf_out;
    size_t pf_mark;
    pf_mark = out_len;
    for (size_t i = 0; i < n; i++) {
        const char *a = names[i];
        /* VFs sort after their PF: known ones need no read at all. */
        if (is_known_vf(a)) continue;
        char total[16];
        if (!attr(a, "sriov_totalvfs", total, sizeof total)) {
            others[n_others++] = names[i];
            continue;
        }
        n_pfs++;
        char vendor[16], device[16], numa[16], drv[64], group[32], net[256];
        attr(a, "vendor", vendor, sizeof vendor);
        attr(a, "device", device, sizeof device);
        attr(a, "numa_node", numa, sizeof numa);
        if (numa[0] == 0 || strcmp(numa, "-1") == 0) snprintf(numa, sizeof numa, "-");
        link_name(a, "driver", drv, sizeof drv);
        link_name(a, "iommu_group", group, sizeof group);
        netdevs(a, net, sizeof net);

        /* Its VFs, from the virtfnN links of its directory. */
        struct virtfns vs = {0};
        vs.dirfd = openat(devfd, a, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (vs.dirfd >= 0) {
            list_dir(vs.dirfd, push_virtfn, &vs);
            close(vs.dirfd);
        }
        struct vf *vfs = vs.v;
        size_t nv = vs.n;
        qsort(vfs, nv, sizeof *vfs, cmp_vf);

        emit("  %s  %s:%s  driver=%s  numa=%s  iommu_group=%s  netdev=%s  vfs=%zu/%s\n", a,
             vendor, device, drv, numa, group, net, nv, total);
        for (size_t v = 0; v < nv; v++) {
            const char *va = vfs[v].addr;
            link_name(va, "driver", drv, sizeof drv);
            link_name(va, "iommu_group", group, sizeof group);
            netdevs(va, net, sizeof net);
            char idx[16];
            snprintf(idx, sizeof idx, "%u", vfs[v].index);
            emit("    vf%-3s %s  driver=%s  iommu_group=%s  netdev=%s\n", idx, va, drv, group,
                 net);
            if (vf_count == vf_cap) {
                vf_cap = vf_cap * 2 + 256;
                vf_names = realloc(vf_names, vf_cap * sizeof *vf_names);
            }
            vf_names[vf_count++] = strdup(va);
        }
        free(vfs);
        qsort(vf_names, vf_count, sizeof *vf_names, cmp_str);
    }
    /* Detach the PF lines, then write header, PFs and the rest in order. */
    pf_out = malloc(out_len - pf_mark + 1);
    memcpy(pf_out, out + pf_mark, out_len - pf_mark);
    size_t pf_len = out_len - pf_mark;
    out_len = 0;
    emit("Physical functions (%zu):\n", n_pfs);
    size_t need = out_len + pf_len;
    if (need >= out_cap) {
        out_cap = need + (1 << 16);
        out = realloc(out, out_cap);
    }
    memcpy(out + out_len, pf_out, pf_len);
    out_len += pf_len;
    free(pf_out);

    size_t shown = 0;
    for (size_t i = 0; i < n_others; i++)
        if (!is_known_vf(others[i])) others[shown++] = others[i];
    emit("Other devices (%zu):\n", shown);
    for (size_t i = 0; i < shown; i++) {
        const char *a = others[i];
        char vendor[16], device[16], class[16], drv[64], net[256];
        attr(a, "vendor", vendor, sizeof vendor);
        attr(a, "device", device, sizeof device);
        attr(a, "class", class, sizeof class);
        link_name(a, "driver", drv, sizeof drv);
        netdevs(a, net, sizeof net);
        emit("  %s  %s:%s  class=%s  driver=%s  netdev=%s\n", a, vendor, device, class, drv, net);
    }
    size_t done = 0;
    while (done < out_len) {
        ssize_t w = write(1, out + done, out_len - done);
        if (w <= 0) return 1;
        done += (size_t)w;
    }
    return 0;
}
