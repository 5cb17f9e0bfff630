// SPDX-License-Identifier: GPL-2.0
/* pop-router XDP fast path.
 *
 * Theory of operation: the same structure as the kernel FIB (prefix -> group -> nexthop), so a
 * failover is one group write here too. Per packet: Ethernet (one 802.1Q tag), IPv4 or IPv6; LPM
 * trie -> group id -> member picked by a flow hash -> nexthop (egress ifindex, MACs, up to three
 * MPLS labels); TTL/hop limit decremented (IPv4 checksum updated incrementally, RFC 1624); labels
 * pushed with the TTL copied from IP (RFC 3032); bpf_redirect_map() through a DEVMAP. Anything we
 * should not handle goes to the kernel with XDP_PASS: no route, TTL <= 1, IPv4 options, fragments,
 * unresolved neighbours (nexthop not valid), non-IP, and packets to the router itself: the mirror
 * writes each of the router's own addresses as a host entry with group LOCAL_GROUP (0; nexthop and
 * group ids are never 0), so a customer route covering one of them cannot pull it off the box.
 *
 * RTBH (RFC 7999): a blackhole FIB entry is a trie entry whose value is BLACKHOLE_GROUP (no group has
 * that id): the packet is dropped here and counted as dropped_blackhole, before the TTL check (the
 * kernel's blackhole route also drops before forwarding would expire it).
 *
 * Source address validation (BCP 38, RFC 3704 feasible path): on an interface whose sav_on slot holds
 * its own ifindex, a packet's source must match the interface's allowed prefixes (sav4/sav6: LPM
 * tries keyed by ifindex then address, prefixlen = 32 + prefix length, so one trie serves every
 * interface) or it is dropped and counted as dropped_spoofed. Checked first, for every IP packet on
 * the interface (fragments and options too), except what the control plane must keep receiving:
 * packets to the router's own addresses (LOCAL_GROUP; looked up only for packets that fail the
 * check), multicast/broadcast destinations and IPv6 link-local sources (neighbour discovery).
 *
 * Counters are per CPU and per ingress interface: row (ingress_ifindex mod IF_SLOTS) of the stats
 * array, one column per outcome. An array row costs nothing per packet (the lookup is inlined), a
 * hash keyed by ifindex would; the loader checks that the interfaces it attaches to use distinct
 * rows and says so when two share one.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_MEMBERS 8
#define MAX_LABELS 3
#define NH_VALID 1
#define ETH_P_8021Q_ 0x8100
#define ETH_P_MPLS_UC_ 0x8847
#define IF_SLOTS 1024
#define LOCAL_GROUP 0
#define BLACKHOLE_GROUP 0xffffffff

enum stat {
	ST_FORWARDED, ST_MPLS_PUSHED, ST_PASS_NO_ROUTE, ST_PASS_TTL, ST_PASS_OPTIONS, ST_PASS_FRAGMENT,
	ST_PASS_NOT_IP, ST_PASS_NEIGHBOUR, ST_PASS_NO_GROUP, ST_DROP_MALFORMED, ST_DROP_REDIRECT,
	ST_PASS_LOCAL, ST_DROP_BLACKHOLE, ST_DROP_SPOOFED, ST_MAX
};

struct lpm4_key { __u32 prefixlen; __u32 addr; };
struct lpm6_key { __u32 prefixlen; __u8 addr[16]; };
struct sav4_key { __u32 prefixlen; __u32 ifindex; __u32 addr; };
struct sav6_key { __u32 prefixlen; __u32 ifindex; __u8 addr[16]; };
struct group { __u32 count; __u32 members[MAX_MEMBERS]; };
struct nexthop {
	__u32 ifindex;
	__u8 smac[6];
	__u8 dmac[6];
	__u16 flags;
	__u16 nlabels;
	__u32 labels[MAX_LABELS];
};

struct { __uint(type, BPF_MAP_TYPE_LPM_TRIE); __type(key, struct lpm4_key); __type(value, __u32);
	 __uint(max_entries, 2000000); __uint(map_flags, BPF_F_NO_PREALLOC); } lpm4 SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LPM_TRIE); __type(key, struct lpm6_key); __type(value, __u32);
	 __uint(max_entries, 500000); __uint(map_flags, BPF_F_NO_PREALLOC); } lpm6 SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __type(key, __u32); __type(value, struct group);
	 __uint(max_entries, 65536); } groups SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __type(key, __u32); __type(value, struct nexthop);
	 __uint(max_entries, 65536); } nexthops SEC(".maps");
/* Not pinned: the kernel adds BPF_F_RDONLY_PROG to a devmap's flags, so libbpf refuses to reuse a
 * pinned one ("parameter mismatch"), and declaring the flag is refused at creation. The mirror
 * refills it from the (pinned) nexthops at start: one entry per egress interface. */
struct { __uint(type, BPF_MAP_TYPE_DEVMAP_HASH); __type(key, __u32); __type(value, __u32);
	 __uint(max_entries, 1024); } tx_ports SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __type(key, __u32); __type(value, __u64);
	 __uint(max_entries, IF_SLOTS * ST_MAX); } stats SEC(".maps");
/* Source address validation: allowed source prefixes per interface, and which interfaces check. */
struct { __uint(type, BPF_MAP_TYPE_LPM_TRIE); __type(key, struct sav4_key); __type(value, __u32);
	 __uint(max_entries, 1000000); __uint(map_flags, BPF_F_NO_PREALLOC); } sav4 SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LPM_TRIE); __type(key, struct sav6_key); __type(value, __u32);
	 __uint(max_entries, 500000); __uint(map_flags, BPF_F_NO_PREALLOC); } sav6 SEC(".maps");
/* Slot (ifindex mod IF_SLOTS) -> that ifindex when SAV is on for it (0: off; two interfaces sharing a
 * slot cannot both be on, the loader refuses it). An array: no hash per packet on other interfaces. */
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __type(key, __u32); __type(value, __u32);
	 __uint(max_entries, IF_SLOTS); } sav_on SEC(".maps");

static __always_inline int count(struct xdp_md *ctx, __u32 s, int action)
{
	__u32 i = (ctx->ingress_ifindex & (IF_SLOTS - 1)) * ST_MAX + s;
	__u64 *v = bpf_map_lookup_elem(&stats, &i);
	if (v)
		*v += 1;
	return action;
}

static __always_inline int sav_on_here(struct xdp_md *ctx)
{
	__u32 slot = ctx->ingress_ifindex & (IF_SLOTS - 1);
	__u32 *on = bpf_map_lookup_elem(&sav_on, &slot);
	return on && *on == ctx->ingress_ifindex;
}

/* 1: drop as spoofed. Only packets that fail the allowed set pay for the destination lookup. */
static __always_inline int spoofed4(struct xdp_md *ctx, __u32 saddr, __u32 daddr)
{
	if (!sav_on_here(ctx))
		return 0;
	__u8 d0 = ((__u8 *)&daddr)[0];
	if (d0 >= 224)  /* multicast, broadcast, class E */
		return 0;
	struct sav4_key sk = { .prefixlen = 64, .ifindex = ctx->ingress_ifindex, .addr = saddr };
	if (bpf_map_lookup_elem(&sav4, &sk))
		return 0;
	struct lpm4_key k = { .prefixlen = 32, .addr = daddr };
	__u32 *gid = bpf_map_lookup_elem(&lpm4, &k);
	return !(gid && *gid == LOCAL_GROUP);
}

static __always_inline int spoofed6(struct xdp_md *ctx, struct ipv6hdr *ip6)
{
	if (!sav_on_here(ctx))
		return 0;
	if (ip6->daddr.in6_u.u6_addr8[0] == 0xff)  /* multicast */
		return 0;
	if (ip6->saddr.in6_u.u6_addr8[0] == 0xfe && (ip6->saddr.in6_u.u6_addr8[1] & 0xc0) == 0x80)
		return 0;  /* link-local source: neighbour discovery and friends */
	struct sav6_key sk = { .prefixlen = 32 + 128, .ifindex = ctx->ingress_ifindex };
	__builtin_memcpy(sk.addr, &ip6->saddr, 16);
	if (bpf_map_lookup_elem(&sav6, &sk))
		return 0;
	struct lpm6_key k = { .prefixlen = 128 };
	__builtin_memcpy(k.addr, &ip6->daddr, 16);
	__u32 *gid = bpf_map_lookup_elem(&lpm6, &k);
	return !(gid && *gid == LOCAL_GROUP);
}

static __always_inline __u16 csum_fold(__u32 c)
{
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return (__u16)~c;
}

/* Integer mixer: every input bit reaches the low bits the member index is taken from (a plain xor
 * of addresses and ports left all flows of one host pair on one member). */
static __always_inline __u32 mix(__u32 h)
{
	h ^= h >> 16;
	h *= 0x45d9f3b;
	h ^= h >> 16;
	h *= 0x45d9f3b;
	h ^= h >> 16;
	return h;
}

static __always_inline struct nexthop *pick(__u32 gid, __u32 hash)
{
	struct group *g = bpf_map_lookup_elem(&groups, &gid);
	if (!g || g->count == 0 || g->count > MAX_MEMBERS)
		return 0;
	/* idx < count <= MAX_MEMBERS already; the mask proves it to the verifier (MAX_MEMBERS is 2^n). */
	__u32 idx = mix(hash) % g->count;
	asm volatile("" : "+r"(idx)); /* keep the compiler from dropping the mask below */
	idx &= MAX_MEMBERS - 1;
	__u32 nh = g->members[idx];
	return bpf_map_lookup_elem(&nexthops, &nh);
}

/* Rewrite MACs, push labels (TTL copied from the decremented IP TTL), redirect. */
static __always_inline int emit(struct xdp_md *ctx, struct nexthop *nh, __u8 ttl, __u32 l2len)
{
	__u16 n = nh->nlabels;
	if (n > MAX_LABELS)
		return count(ctx, ST_DROP_MALFORMED, XDP_DROP);
	if (n) {
		/* Only untagged frames get labels: the Ethernet header moves to the new front. */
		if (l2len != sizeof(struct ethhdr))
			return count(ctx, ST_PASS_NOT_IP, XDP_PASS);
		if (bpf_xdp_adjust_head(ctx, -(int)(n * 4)))
			return count(ctx, ST_DROP_MALFORMED, XDP_DROP);
	}
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return count(ctx, ST_DROP_MALFORMED, XDP_DROP);
	__builtin_memcpy(eth->h_dest, nh->dmac, 6);
	__builtin_memcpy(eth->h_source, nh->smac, 6);
	if (n) {
		eth->h_proto = bpf_htons(ETH_P_MPLS_UC_);
		__u32 *lse = (void *)(eth + 1);

		for (int i = 0; i < MAX_LABELS; i++) {
			if (i >= n)
				break;
			if ((void *)(lse + i + 1) > end)
				return count(ctx, ST_DROP_MALFORMED, XDP_DROP);
			__u32 v = (nh->labels[i] << 12) | ttl;
			if (i == n - 1)
				v |= 1 << 8; /* bottom of stack */
			lse[i] = bpf_htonl(v);
		}
		count(ctx, ST_MPLS_PUSHED, 0);
	}
	int rc = bpf_redirect_map(&tx_ports, nh->ifindex, 0);
	if (rc != XDP_REDIRECT)
		return count(ctx, ST_DROP_REDIRECT, XDP_DROP);
	return count(ctx, ST_FORWARDED, XDP_REDIRECT);
}

static __always_inline int forward(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return count(ctx, ST_DROP_MALFORMED, XDP_DROP);
	__u16 proto = eth->h_proto;
	__u32 l2len = sizeof(*eth);
	if (proto == bpf_htons(ETH_P_8021Q_)) {
		__u16 *vlan = (void *)(eth + 1);
		if ((void *)(vlan + 2) > end)
			return count(ctx, ST_DROP_MALFORMED, XDP_DROP);
		proto = vlan[1];
		l2len += 4;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + l2len;
		if ((void *)(ip + 1) > end)
			return count(ctx, ST_DROP_MALFORMED, XDP_DROP);
		if (spoofed4(ctx, ip->saddr, ip->daddr))
			return count(ctx, ST_DROP_SPOOFED, XDP_DROP);
		if (ip->ihl != 5)
			return count(ctx, ST_PASS_OPTIONS, XDP_PASS);
		if (ip->frag_off & bpf_htons(0x3fff))
			return count(ctx, ST_PASS_FRAGMENT, XDP_PASS);
		struct lpm4_key k = { .prefixlen = 32, .addr = ip->daddr };
		__u32 *gid = bpf_map_lookup_elem(&lpm4, &k);
		if (!gid)
			return count(ctx, ST_PASS_NO_ROUTE, XDP_PASS);
		if (*gid == LOCAL_GROUP)
			return count(ctx, ST_PASS_LOCAL, XDP_PASS);
		if (*gid == BLACKHOLE_GROUP)
			return count(ctx, ST_DROP_BLACKHOLE, XDP_DROP);
		if (ip->ttl <= 1)
			return count(ctx, ST_PASS_TTL, XDP_PASS);
		__u32 hash = ip->saddr ^ ip->daddr ^ ip->protocol;
		if (ip->protocol == IPPROTO_UDP || ip->protocol == IPPROTO_TCP) {
			__u32 *ports = (void *)(ip + 1);
			if ((void *)(ports + 1) <= end)
				hash ^= *ports;
		}
		struct nexthop *nh = pick(*gid, hash);
		if (!nh)
			return count(ctx, ST_PASS_NO_GROUP, XDP_PASS);
		if (!(nh->flags & NH_VALID))
			return count(ctx, ST_PASS_NEIGHBOUR, XDP_PASS);
		/* TTL - 1 with an incremental checksum update (RFC 1624). */
		__u32 c = (~bpf_ntohs(ip->check) & 0xffff) + (~bpf_ntohs(*(__u16 *)&ip->ttl) & 0xffff);
		ip->ttl -= 1;
		c += bpf_ntohs(*(__u16 *)&ip->ttl);
		ip->check = bpf_htons(csum_fold(c));
		return emit(ctx, nh, ip->ttl, l2len);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + l2len;
		if ((void *)(ip6 + 1) > end)
			return count(ctx, ST_DROP_MALFORMED, XDP_DROP);
		if (spoofed6(ctx, ip6))
			return count(ctx, ST_DROP_SPOOFED, XDP_DROP);
		struct lpm6_key k = { .prefixlen = 128 };
		__builtin_memcpy(k.addr, &ip6->daddr, 16);
		__u32 *gid = bpf_map_lookup_elem(&lpm6, &k);
		if (!gid)
			return count(ctx, ST_PASS_NO_ROUTE, XDP_PASS);
		if (*gid == LOCAL_GROUP)
			return count(ctx, ST_PASS_LOCAL, XDP_PASS);
		if (*gid == BLACKHOLE_GROUP)
			return count(ctx, ST_DROP_BLACKHOLE, XDP_DROP);
		if (ip6->hop_limit <= 1)
			return count(ctx, ST_PASS_TTL, XDP_PASS);
		__u32 hash = ip6->saddr.in6_u.u6_addr32[3] ^ ip6->daddr.in6_u.u6_addr32[3] ^ ip6->flow_lbl[2];
		struct nexthop *nh = pick(*gid, hash);
		if (!nh)
			return count(ctx, ST_PASS_NO_GROUP, XDP_PASS);
		if (!(nh->flags & NH_VALID))
			return count(ctx, ST_PASS_NEIGHBOUR, XDP_PASS);
		ip6->hop_limit -= 1;
		return emit(ctx, nh, ip6->hop_limit, l2len);
	}
	return count(ctx, ST_PASS_NOT_IP, XDP_PASS);
}

SEC("xdp")
int pop_xdp(struct xdp_md *ctx)
{
	return forward(ctx);
}

/* Attached on the receiving side of a veth pair: frames redirected into a veth are only delivered
 * when the peer runs an XDP program. */
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
