//go:build linux && cgo

#include "ibv.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MG_SYM(field, symbol, required)                                        \
	do {                                                                   \
		*(void **)(&t->field) = dlsym(lib, symbol);                    \
		if ((required) && t->field == NULL) {                          \
			snprintf(err, errlen, "%s: symbol %s missing", name,   \
				 symbol);                                      \
			return -1;                                             \
		}                                                              \
	} while (0)

// mg_load opens name (reusing a copy already loaded in the process) and
// fills t. dlopen and dlerror run inside this one call, on one thread.
int mg_load(const char *name, mg_ibv *t, char *err, size_t errlen) {
	memset(t, 0, sizeof(*t));
	dlerror();
	void *lib = dlopen(name, RTLD_NOW | RTLD_NOLOAD);
	if (lib == NULL) {
		lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	}
	if (lib == NULL) {
		const char *e = dlerror();
		snprintf(err, errlen, "%s", e != NULL ? e : "dlopen failed");
		return -1;
	}
	t->lib = lib;
	MG_SYM(get_device_list, "ibv_get_device_list", 1);
	MG_SYM(free_device_list, "ibv_free_device_list", 1);
	MG_SYM(open_device, "ibv_open_device", 1);
	MG_SYM(close_device, "ibv_close_device", 1);
	MG_SYM(query_device, "ibv_query_device", 1);
	MG_SYM(query_port, "ibv_query_port", 1);
	MG_SYM(query_gid, "ibv_query_gid", 1);
	MG_SYM(query_gid_ex, "_ibv_query_gid_ex", 0);
	MG_SYM(alloc_pd, "ibv_alloc_pd", 1);
	MG_SYM(dealloc_pd, "ibv_dealloc_pd", 1);
	MG_SYM(reg_mr, "ibv_reg_mr", 1);
	MG_SYM(reg_dmabuf_mr, "ibv_reg_dmabuf_mr", 0);
	MG_SYM(dereg_mr, "ibv_dereg_mr", 1);
	MG_SYM(create_comp_channel, "ibv_create_comp_channel", 1);
	MG_SYM(destroy_comp_channel, "ibv_destroy_comp_channel", 1);
	MG_SYM(create_cq, "ibv_create_cq", 1);
	MG_SYM(destroy_cq, "ibv_destroy_cq", 1);
	MG_SYM(get_cq_event, "ibv_get_cq_event", 1);
	MG_SYM(ack_cq_events, "ibv_ack_cq_events", 1);
	MG_SYM(create_qp, "ibv_create_qp", 1);
	MG_SYM(modify_qp, "ibv_modify_qp", 1);
	MG_SYM(query_qp, "ibv_query_qp", 1);
	MG_SYM(destroy_qp, "ibv_destroy_qp", 1);
	MG_SYM(get_async_event, "ibv_get_async_event", 1);
	MG_SYM(ack_async_event, "ibv_ack_async_event", 1);
	return 0;
}

struct ibv_device **mg_get_device_list(mg_ibv *t, int *n) {
	*n = 0;
	return t->get_device_list(n);
}

void mg_free_device_list(mg_ibv *t, struct ibv_device **list) {
	if (list != NULL) {
		t->free_device_list(list);
	}
}

int mg_device_count(struct ibv_device **list) {
	int n = 0;
	while (list != NULL && list[n] != NULL) {
		n++;
	}
	return n;
}

const char *mg_device_name(struct ibv_device **list, int i) { return list[i]->name; }

const char *mg_device_ibdev_path(struct ibv_device **list, int i) { return list[i]->ibdev_path; }

static int set_nonblock(int fd) {
	int flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		return errno;
	}
	return 0;
}

struct ibv_context *mg_open_device(mg_ibv *t, struct ibv_device **list, int i) {
	struct ibv_context *ctx = t->open_device(list[i]);
	if (ctx != NULL && set_nonblock(ctx->async_fd) != 0) {
		int e = errno;
		t->close_device(ctx);
		errno = e;
		return NULL;
	}
	return ctx;
}

int mg_close_device(mg_ibv *t, struct ibv_context *ctx) { return t->close_device(ctx); }

int mg_query_device(mg_ibv *t, struct ibv_context *ctx, mg_device_attr *out) {
	struct ibv_device_attr a;
	memset(&a, 0, sizeof(a));
	int rc = t->query_device(ctx, &a);
	if (rc != 0) {
		return rc;
	}
	out->max_qp_wr = a.max_qp_wr;
	out->max_sge = a.max_sge;
	out->max_cqe = a.max_cqe;
	out->max_qp_rd_atom = a.max_qp_rd_atom;
	out->max_qp_init_rd_atom = a.max_qp_init_rd_atom;
	out->phys_port_cnt = a.phys_port_cnt;
	return 0;
}

// ibv_query_port is a macro in verbs.h around the extended op; this is the
// same logic with the compat symbol reached through the table.
int mg_query_port(mg_ibv *t, struct ibv_context *ctx, uint8_t port, mg_port_attr *out) {
	struct ibv_port_attr a;
	memset(&a, 0, sizeof(a));
	struct verbs_context *vctx = verbs_get_ctx_op(ctx, query_port);
	int rc;
	if (vctx != NULL) {
		rc = vctx->query_port(ctx, port, &a, sizeof(a));
	} else {
		rc = t->query_port(ctx, port, (struct _compat_ibv_port_attr *)&a);
	}
	if (rc != 0) {
		return rc;
	}
	out->state = a.state;
	out->max_mtu = a.max_mtu;
	out->active_mtu = a.active_mtu;
	out->gid_tbl_len = a.gid_tbl_len;
	out->max_msg_sz = a.max_msg_sz;
	out->lid = a.lid;
	out->link_layer = a.link_layer;
	out->active_width = a.active_width;
	out->active_speed = a.active_speed;
	return 0;
}

// mg_query_gid reads a GID; *type is the GID type, or -1 when this
// libibverbs cannot tell (the caller then reads sysfs).
int mg_query_gid(mg_ibv *t, struct ibv_context *ctx, uint8_t port, int index, uint8_t *gid, int *type) {
	*type = -1;
	if (t->query_gid_ex != NULL) {
		struct ibv_gid_entry e;
		memset(&e, 0, sizeof(e));
		int rc = t->query_gid_ex(ctx, port, (uint32_t)index, &e, 0, sizeof(e));
		if (rc == 0) {
			memcpy(gid, e.gid.raw, 16);
			*type = (int)e.gid_type;
			return 0;
		}
		if (rc == ENODATA) { // an empty entry
			memset(gid, 0, 16);
			return 0;
		}
	}
	union ibv_gid g;
	int rc = t->query_gid(ctx, port, index, &g);
	if (rc != 0) {
		return rc;
	}
	memcpy(gid, g.raw, 16);
	return 0;
}

struct ibv_pd *mg_alloc_pd(mg_ibv *t, struct ibv_context *ctx) { return t->alloc_pd(ctx); }

int mg_dealloc_pd(mg_ibv *t, struct ibv_pd *pd) { return t->dealloc_pd(pd); }

struct ibv_mr *mg_reg_mr(mg_ibv *t, struct ibv_pd *pd, uint64_t addr, uint64_t len, int access) {
	return t->reg_mr(pd, (void *)(uintptr_t)addr, (size_t)len, access);
}

struct ibv_mr *mg_reg_dmabuf_mr(mg_ibv *t, struct ibv_pd *pd, uint64_t off, uint64_t len, uint64_t iova, int fd,
				int access) {
	if (t->reg_dmabuf_mr == NULL) {
		errno = EOPNOTSUPP;
		return NULL;
	}
	return t->reg_dmabuf_mr(pd, off, (size_t)len, iova, fd, access);
}

uint32_t mg_mr_lkey(struct ibv_mr *mr) { return mr->lkey; }

uint32_t mg_mr_rkey(struct ibv_mr *mr) { return mr->rkey; }

int mg_dereg_mr(mg_ibv *t, struct ibv_mr *mr) { return t->dereg_mr(mr); }

struct ibv_comp_channel *mg_create_comp_channel(mg_ibv *t, struct ibv_context *ctx) {
	struct ibv_comp_channel *ch = t->create_comp_channel(ctx);
	if (ch != NULL && set_nonblock(ch->fd) != 0) {
		int e = errno;
		t->destroy_comp_channel(ch);
		errno = e;
		return NULL;
	}
	return ch;
}

int mg_destroy_comp_channel(mg_ibv *t, struct ibv_comp_channel *ch) { return t->destroy_comp_channel(ch); }

struct ibv_cq *mg_create_cq(mg_ibv *t, struct ibv_context *ctx, int cqe, struct ibv_comp_channel *ch, int vector) {
	return t->create_cq(ctx, cqe, NULL, ch, vector);
}

int mg_num_comp_vectors(struct ibv_context *ctx) { return ctx->num_comp_vectors; }

int mg_destroy_cq(mg_ibv *t, struct ibv_cq *cq) { return t->destroy_cq(cq); }

struct ibv_qp *mg_create_qp(mg_ibv *t, struct ibv_pd *pd, struct ibv_cq *scq, struct ibv_cq *rcq,
			    uint32_t max_send_wr, uint32_t max_recv_wr, uint32_t max_send_sge,
			    uint32_t max_recv_sge, uint32_t max_inline) {
	struct ibv_qp_init_attr a;
	memset(&a, 0, sizeof(a));
	a.send_cq = scq;
	a.recv_cq = rcq;
	a.qp_type = IBV_QPT_RC;
	a.sq_sig_all = 0;
	a.cap.max_send_wr = max_send_wr;
	a.cap.max_recv_wr = max_recv_wr;
	a.cap.max_send_sge = max_send_sge;
	a.cap.max_recv_sge = max_recv_sge;
	a.cap.max_inline_data = max_inline;
	return t->create_qp(pd, &a);
}

uint32_t mg_qp_num(struct ibv_qp *qp) { return qp->qp_num; }

int mg_modify_qp(mg_ibv *t, struct ibv_qp *qp, const mg_qp_attr *in, int mask) {
	struct ibv_qp_attr a;
	memset(&a, 0, sizeof(a));
	a.qp_state = (enum ibv_qp_state)in->state;
	a.port_num = in->port;
	a.pkey_index = in->pkey_index;
	a.qp_access_flags = in->access;
	a.path_mtu = (enum ibv_mtu)in->path_mtu;
	a.dest_qp_num = in->dest_qp_num;
	a.rq_psn = in->rq_psn;
	a.sq_psn = in->sq_psn;
	a.max_dest_rd_atomic = in->max_dest_rd_atomic;
	a.max_rd_atomic = in->max_rd_atomic;
	a.min_rnr_timer = in->min_rnr_timer;
	a.timeout = in->timeout;
	a.retry_cnt = in->retry_cnt;
	a.rnr_retry = in->rnr_retry;
	a.ah_attr.dlid = in->dlid;
	a.ah_attr.sl = in->sl;
	a.ah_attr.port_num = in->port;
	a.ah_attr.is_global = in->is_global;
	if (in->is_global) {
		memcpy(a.ah_attr.grh.dgid.raw, in->dgid, 16);
		a.ah_attr.grh.flow_label = in->flow_label;
		a.ah_attr.grh.sgid_index = in->sgid_index;
		a.ah_attr.grh.hop_limit = in->hop_limit;
		a.ah_attr.grh.traffic_class = in->traffic_class;
	}
	return t->modify_qp(qp, &a, mask);
}

int mg_query_qp_state(mg_ibv *t, struct ibv_qp *qp, int *state) {
	struct ibv_qp_attr a;
	struct ibv_qp_init_attr ia;
	memset(&a, 0, sizeof(a));
	int rc = t->query_qp(qp, &a, IBV_QP_STATE, &ia);
	*state = (int)a.qp_state;
	return rc;
}

int mg_destroy_qp(mg_ibv *t, struct ibv_qp *qp) { return t->destroy_qp(qp); }

#define MG_STACK_WRS 16

// mg_post_send builds a chain of n work requests and posts it with one
// ibv_post_send (one doorbell). sge is only read during the call.
int mg_post_send(struct ibv_qp *qp, const mg_send_wr *w, int n, struct ibv_sge *sge, int *bad) {
	struct ibv_send_wr stack[MG_STACK_WRS];
	struct ibv_send_wr *wr = stack;
	*bad = 0;
	if (n <= 0) {
		return 0;
	}
	if (n > MG_STACK_WRS) {
		wr = calloc((size_t)n, sizeof(*wr));
		if (wr == NULL) {
			return ENOMEM;
		}
	} else {
		memset(wr, 0, sizeof(*wr) * (size_t)n);
	}
	for (int i = 0; i < n; i++) {
		wr[i].wr_id = w[i].wr_id;
		wr[i].next = i + 1 < n ? &wr[i + 1] : NULL;
		wr[i].sg_list = w[i].num_sge ? &sge[w[i].sge_off] : NULL;
		wr[i].num_sge = w[i].num_sge;
		wr[i].opcode = (enum ibv_wr_opcode)w[i].opcode;
		wr[i].send_flags = w[i].flags;
		if (w[i].opcode == IBV_WR_RDMA_WRITE || w[i].opcode == IBV_WR_RDMA_WRITE_WITH_IMM ||
		    w[i].opcode == IBV_WR_RDMA_READ) {
			wr[i].wr.rdma.remote_addr = w[i].remote_addr;
			wr[i].wr.rdma.rkey = w[i].rkey;
		}
		if (w[i].opcode == IBV_WR_RDMA_WRITE_WITH_IMM || w[i].opcode == IBV_WR_SEND_WITH_IMM) {
			wr[i].imm_data = htonl(w[i].imm);
		}
	}
	struct ibv_send_wr *badwr = NULL;
	int rc = ibv_post_send(qp, wr, &badwr);
	if (rc != 0 && badwr != NULL) {
		*bad = (int)(badwr - wr);
	}
	if (wr != stack) {
		free(wr);
	}
	return rc;
}

int mg_post_recv(struct ibv_qp *qp, const mg_recv_wr *w, int n, struct ibv_sge *sge, int *bad) {
	struct ibv_recv_wr stack[MG_STACK_WRS];
	struct ibv_recv_wr *wr = stack;
	*bad = 0;
	if (n <= 0) {
		return 0;
	}
	if (n > MG_STACK_WRS) {
		wr = calloc((size_t)n, sizeof(*wr));
		if (wr == NULL) {
			return ENOMEM;
		}
	} else {
		memset(wr, 0, sizeof(*wr) * (size_t)n);
	}
	for (int i = 0; i < n; i++) {
		wr[i].wr_id = w[i].wr_id;
		wr[i].next = i + 1 < n ? &wr[i + 1] : NULL;
		wr[i].sg_list = w[i].num_sge ? &sge[w[i].sge_off] : NULL;
		wr[i].num_sge = (int)w[i].num_sge;
	}
	struct ibv_recv_wr *badwr = NULL;
	int rc = ibv_post_recv(qp, wr, &badwr);
	if (rc != 0 && badwr != NULL) {
		*bad = (int)(badwr - wr);
	}
	if (wr != stack) {
		free(wr);
	}
	return rc;
}

#define MG_POLL_MAX 32

int mg_poll_cq(struct ibv_cq *cq, int n, mg_wc *out) {
	struct ibv_wc wc[MG_POLL_MAX];
	if (n > MG_POLL_MAX) {
		n = MG_POLL_MAX;
	}
	int got = ibv_poll_cq(cq, n, wc);
	for (int i = 0; i < got; i++) {
		out[i].wr_id = wc[i].wr_id;
		out[i].status = wc[i].status;
		out[i].opcode = wc[i].opcode;
		out[i].vendor_err = wc[i].vendor_err;
		out[i].byte_len = wc[i].byte_len;
		out[i].imm = (wc[i].wc_flags & IBV_WC_WITH_IMM) ? ntohl(wc[i].imm_data) : 0;
		out[i].wc_flags = wc[i].wc_flags;
		out[i].qp_num = wc[i].qp_num;
	}
	return got;
}

int mg_req_notify_cq(struct ibv_cq *cq, int solicited_only) { return ibv_req_notify_cq(cq, solicited_only); }

// mg_wait_cq_event waits up to timeout_ms for a completion event: 1 with
// *cq set (the event acknowledged), 0 on timeout, a negative errno on error.
int mg_wait_cq_event(mg_ibv *t, struct ibv_comp_channel *ch, int timeout_ms, struct ibv_cq **cq) {
	struct pollfd p = {.fd = ch->fd, .events = POLLIN};
	int rc = poll(&p, 1, timeout_ms);
	if (rc < 0) {
		return errno == EINTR ? 0 : -errno;
	}
	if (rc == 0) {
		return 0;
	}
	void *cq_ctx = NULL;
	if (t->get_cq_event(ch, cq, &cq_ctx) != 0) {
		return (errno == EAGAIN || errno == EINTR) ? 0 : -errno;
	}
	t->ack_cq_events(*cq, 1);
	return 1;
}

// mg_wait_async_event waits up to timeout_ms for an asynchronous event and
// acknowledges it: 1 with the event's fields set, 0 on timeout, a negative
// errno on error.
int mg_wait_async_event(mg_ibv *t, struct ibv_context *ctx, int timeout_ms, uint32_t *type, uint32_t *qpn,
			struct ibv_cq **cq, int *port) {
	struct pollfd p = {.fd = ctx->async_fd, .events = POLLIN};
	int rc = poll(&p, 1, timeout_ms);
	if (rc < 0) {
		return errno == EINTR ? 0 : -errno;
	}
	if (rc == 0) {
		return 0;
	}
	struct ibv_async_event ev;
	if (t->get_async_event(ctx, &ev) != 0) {
		return (errno == EAGAIN || errno == EINTR) ? 0 : -errno;
	}
	*type = ev.event_type;
	*qpn = 0;
	*cq = NULL;
	*port = 0;
	switch (ev.event_type) {
	case IBV_EVENT_QP_FATAL:
	case IBV_EVENT_QP_REQ_ERR:
	case IBV_EVENT_QP_ACCESS_ERR:
	case IBV_EVENT_COMM_EST:
	case IBV_EVENT_SQ_DRAINED:
	case IBV_EVENT_PATH_MIG:
	case IBV_EVENT_PATH_MIG_ERR:
	case IBV_EVENT_QP_LAST_WQE_REACHED:
		*qpn = ev.element.qp->qp_num;
		break;
	case IBV_EVENT_CQ_ERR:
		*cq = ev.element.cq;
		break;
	case IBV_EVENT_PORT_ACTIVE:
	case IBV_EVENT_PORT_ERR:
	case IBV_EVENT_LID_CHANGE:
	case IBV_EVENT_PKEY_CHANGE:
	case IBV_EVENT_SM_CHANGE:
	case IBV_EVENT_CLIENT_REREGISTER:
	case IBV_EVENT_GID_CHANGE:
		*port = ev.element.port_num;
		break;
	default:
		break;
	}
	t->ack_async_event(&ev);
	return 1;
}
