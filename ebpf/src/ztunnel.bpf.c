/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ztunnel.bpf.c: the one translation unit that becomes ebpf/ztunnel.bpf.o.
 *
 * Each program lives in its own file (one job per program); they are included here so that
 * clang alone produces a single object in which every map is defined once
 * (ztunnel_maps.h). The other .c files in this directory are not compiled on their own.
 * Build with `cargo xtask ebpf`; ebpf/README.md explains why the object is committed.
 */
#include "common.h"

#include "connect.c"
#include "sockops.c"
#include "getpeername.c"
#include "sk_lookup.c"
#include "bind.c"

/* No GPL-only helper is used; the string follows the project's license. */
char LICENSE[] SEC("license") = "Apache-2.0";
