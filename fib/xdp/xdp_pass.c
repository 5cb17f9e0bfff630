// SPDX-License-Identifier: GPL-2.0
/* A program that passes every frame: attached (with `ip link set dev IF xdp obj xdp_pass.o sec xdp`)
 * to the far end of a veth that pop-router's XDP fast path redirects into. A veth only delivers
 * redirected frames when its peer runs an XDP program; real NICs need nothing of the kind. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
