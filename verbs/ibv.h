// C side of the cgo layer over libibverbs (see ibv_linux.go).
//
// libibverbs is opened with dlopen, never linked: mg_ibv holds a pointer
// per exported function and every call goes through a small trampoline
// here. The verbs that rdma-core defines static inline in verbs.h
// (ibv_post_send, ibv_post_recv, ibv_poll_cq, ibv_req_notify_cq, and the
// extended ibv_query_port) only dereference ctx->ops, so they work with the
// headers alone. Structures with unions (ibv_send_wr, ibv_wc, ibv_qp_attr)
// are filled from flat mg_* structures so that Go never touches a union.
#ifndef MORI_GO_VERBS_IBV_H
#define MORI_GO_VERBS_IBV_H

#include <stddef.h>
#include <stdint.h>
#include <infiniband/verbs.h>

typedef struct mg_ibv {
	void *lib;
	struct ibv_device **(*get_device_list)(int *);
	void (*free_device_list)(struct ibv_device **);
	struct ibv_context *(*open_device)(struct ibv_device *);
	int (*close_device)(struct ibv_context *);
	int (*query_device)(struct ibv_context *, struct ibv_device_attr *);
	int (*query_port)(struct ibv_context *, uint8_t, struct _compat_ibv_port_attr *);
	int (*query_gid)(struct ibv_context *, uint8_t, int, union ibv_gid *);
	int (*query_gid_ex)(struct ibv_context *, uint32_t, uint32_t, struct ibv_gid_entry *, uint32_t, size_t); /* optional */
	struct ibv_pd *(*alloc_pd)(struct ibv_context *);
	int (*dealloc_pd)(struct ibv_pd *);
	struct ibv_mr *(*reg_mr)(struct ibv_pd *, void *, size_t, int);
	struct ibv_mr *(*reg_dmabuf_mr)(struct ibv_pd *, uint64_t, size_t, uint64_t, int, int); /* optional */
	int (*dereg_mr)(struct ibv_mr *);
	struct ibv_comp_channel *(*create_comp_channel)(struct ibv_context *);
	int (*destroy_comp_channel)(struct ibv_comp_channel *);
	struct ibv_cq *(*create_cq)(struct ibv_context *, int, void *, struct ibv_comp_channel *, int);
	int (*destroy_cq)(struct ibv_cq *);
	int (*get_cq_event)(struct ibv_comp_channel *, struct ibv_cq **, void **);
	void (*ack_cq_events)(struct ibv_cq *, unsigned int);
	struct ibv_qp *(*create_qp)(struct ibv_pd *, struct ibv_qp_init_attr *);
	int (*modify_qp)(struct ibv_qp *, struct ibv_qp_attr *, int);
	int (*query_qp)(struct ibv_qp *, struct ibv_qp_attr *, int, struct ibv_qp_init_attr *);
	int (*destroy_qp)(struct ibv_qp *);
	int (*get_async_event)(struct ibv_context *, struct ibv_async_event *);
	void (*ack_async_event)(struct ibv_async_event *);
} mg_ibv;

typedef struct mg_port_attr {
	uint32_t max_msg_sz;
	int32_t gid_tbl_len;
	uint16_t lid;
	uint8_t state, max_mtu, active_mtu, link_layer, active_width, active_speed;
} mg_port_attr;

typedef struct mg_device_attr {
	int32_t max_qp_wr, max_sge, max_cqe, max_qp_rd_atom, max_qp_init_rd_atom;
	uint8_t phys_port_cnt;
} mg_device_attr;

typedef struct mg_qp_attr {
	uint32_t dest_qp_num, rq_psn, sq_psn, access, flow_label;
	uint16_t pkey_index, dlid;
	uint8_t state, port, path_mtu, max_dest_rd_atomic, max_rd_atomic, min_rnr_timer;
	uint8_t timeout, retry_cnt, rnr_retry, sl, is_global, sgid_index, hop_limit, traffic_class;
	uint8_t dgid[16];
} mg_qp_attr;

typedef struct mg_send_wr {
	uint64_t wr_id, remote_addr;
	uint32_t rkey, imm, flags, sge_off;
	uint8_t opcode, num_sge;
} mg_send_wr;

typedef struct mg_recv_wr {
	uint64_t wr_id;
	uint32_t sge_off, num_sge;
} mg_recv_wr;

typedef struct mg_wc {
	uint64_t wr_id;
	uint32_t status, opcode, vendor_err, byte_len, imm, wc_flags, qp_num, pad;
} mg_wc;

int mg_load(const char *name, mg_ibv *t, char *err, size_t errlen);
int mg_device_count(struct ibv_device **list);
const char *mg_device_name(struct ibv_device **list, int i);
const char *mg_device_ibdev_path(struct ibv_device **list, int i);
struct ibv_context *mg_open_device(mg_ibv *t, struct ibv_device **list, int i);
int mg_query_device(mg_ibv *t, struct ibv_context *ctx, mg_device_attr *out);
int mg_query_port(mg_ibv *t, struct ibv_context *ctx, uint8_t port, mg_port_attr *out);
int mg_query_gid(mg_ibv *t, struct ibv_context *ctx, uint8_t port, int index, uint8_t *gid, int *type);
struct ibv_mr *mg_reg_mr(mg_ibv *t, struct ibv_pd *pd, uint64_t addr, uint64_t len, int access);
struct ibv_mr *mg_reg_dmabuf_mr(mg_ibv *t, struct ibv_pd *pd, uint64_t off, uint64_t len, uint64_t iova, int fd, int access);
uint32_t mg_mr_lkey(struct ibv_mr *mr);
uint32_t mg_mr_rkey(struct ibv_mr *mr);
struct ibv_comp_channel *mg_create_comp_channel(mg_ibv *t, struct ibv_context *ctx);
struct ibv_cq *mg_create_cq(mg_ibv *t, struct ibv_context *ctx, int cqe, struct ibv_comp_channel *ch, int vector);
int mg_num_comp_vectors(struct ibv_context *ctx);
struct ibv_qp *mg_create_qp(mg_ibv *t, struct ibv_pd *pd, struct ibv_cq *scq, struct ibv_cq *rcq,
			    uint32_t max_send_wr, uint32_t max_recv_wr, uint32_t max_send_sge,
			    uint32_t max_recv_sge, uint32_t max_inline);
uint32_t mg_qp_num(struct ibv_qp *qp);
int mg_modify_qp(mg_ibv *t, struct ibv_qp *qp, const mg_qp_attr *a, int mask);
int mg_query_qp_state(mg_ibv *t, struct ibv_qp *qp, int *state);
int mg_post_send(struct ibv_qp *qp, const mg_send_wr *w, int n, struct ibv_sge *sge, int *bad);
int mg_post_recv(struct ibv_qp *qp, const mg_recv_wr *w, int n, struct ibv_sge *sge, int *bad);
int mg_poll_cq(struct ibv_cq *cq, int n, mg_wc *out);
int mg_req_notify_cq(struct ibv_cq *cq, int solicited_only);
int mg_wait_cq_event(mg_ibv *t, struct ibv_comp_channel *ch, int timeout_ms, struct ibv_cq **cq);
int mg_wait_async_event(mg_ibv *t, struct ibv_context *ctx, int timeout_ms, uint32_t *type,
			uint32_t *qpn, struct ibv_cq **cq, int *port);
int mg_close_device(mg_ibv *t, struct ibv_context *ctx);
int mg_dealloc_pd(mg_ibv *t, struct ibv_pd *pd);
int mg_dereg_mr(mg_ibv *t, struct ibv_mr *mr);
int mg_destroy_comp_channel(mg_ibv *t, struct ibv_comp_channel *ch);
int mg_destroy_cq(mg_ibv *t, struct ibv_cq *cq);
int mg_destroy_qp(mg_ibv *t, struct ibv_qp *qp);
struct ibv_pd *mg_alloc_pd(mg_ibv *t, struct ibv_context *ctx);
struct ibv_device **mg_get_device_list(mg_ibv *t, int *n);
void mg_free_device_list(mg_ibv *t, struct ibv_device **list);

#endif
