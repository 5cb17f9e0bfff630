// SPDX-License-Identifier: GPL-2.0
/* Benchmark-only XDP programs for benchmarks/xdp.py, built as build/xdp_gen.o (never loaded by the
 * daemon, so none of this is in the production object build/pop_xdp.o).
 *
 * The production source is included so gen_forward runs pop_xdp's own forward() code, not a copy;
 * the benchmark loads this object with the production program's maps reused (libbpf
 * bpf_map__reuse_fd on lpm4, lpm6, groups, nexthops, tx_ports, stats), so the generator forwards
 * through the very tables the mirror wrote, and the production programs in this object are not
 * loaded (bpf_program__set_autoload false).
 *
 * Generators, for BPF_PROG_RUN live-frames mode, which reuses pages without restoring their content:
 * each run first rewrites the frame's headers from a template (as a real NIC would deliver a fresh
 * frame), then forwards (gen_forward) or hands to the kernel (gen_pass, XDP_PASS).
 * Sink: xdp_count, attached on the receiving veth, counts what arrives and drops it (the receiver's
 * rate is the forwarding rate).
 */
#include "pop_xdp.c"

#define GEN_HDR 42
struct gen_frame { __u8 data[GEN_HDR]; };
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __type(key, __u32); __type(value, struct gen_frame);
	 __uint(max_entries, 1); } gen_template SEC(".maps");

static __always_inline int reset(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct gen_frame *t = bpf_map_lookup_elem(&gen_template, &zero);
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	if (!t || data + GEN_HDR > end)
		return -1;
	__builtin_memcpy(data, t->data, GEN_HDR);
	return 0;
}

SEC("xdp")
int gen_forward(struct xdp_md *ctx)
{
	if (reset(ctx))
		return XDP_DROP;
	return forward(ctx);
}

SEC("xdp")
int gen_pass(struct xdp_md *ctx)
{
	if (reset(ctx))
		return XDP_DROP;
	return XDP_PASS;
}

struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __type(key, __u32); __type(value, __u64);
	 __uint(max_entries, 1); } rx_count SEC(".maps");

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *v = bpf_map_lookup_elem(&rx_count, &zero);
	if (v)
		*v += 1;
	return XDP_DROP;
}
