"""Configuration objects with MORI-IO's constructors and attribute names."""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

from .enums import PollCqMode
from .errors import InvalidArgsError

__all__ = [
    "IOEngineConfig",
    "BackendConfig",
    "RdmaBackendConfig",
    "XgmiBackendConfig",
    "FabricBackendConfig",
]


class IOEngineConfig:
    """Engine configuration: ``IOEngineConfig(host="", port=0)`` as in MORI-IO.

    ``host`` is the address peers reach this engine at ("" means 127.0.0.1);
    ``port`` is the control-plane port (0 picks a free one).

    mori-go extras, all keyword-only; ``None`` means "take the environment
    variable, else the engine default":

    ===================== =============================== =====================
    attribute             environment variable            meaning
    ===================== =============================== =====================
    backend               MORI_GO_BACKEND                 auto | tcp | rdma
    rdma_devices          MORI_RDMA_DEVICES               RDMA device list
    secret                MORI_GO_SECRET                  shared engine secret
    log_level             MORI_GO_LOG_LEVEL               debug|info|warn|error
    transfer_timeout_ms   MORI_GO_TRANSFER_TIMEOUT_MS     per-transfer timeout
    tcp_streams           MORI_GO_TCP_STREAMS             TCP streams per peer
    tcp_busy_poll_us      MORI_GO_TCP_BUSY_POLL_US        poll before sleeping
    tcp_congestion        MORI_GO_TCP_CONGESTION          e.g. cubic (default:
                                                          the system's)
    gpu                   MORI_GO_GPU                     auto | off | lib path
    node_id               MORI_NODE_ID                    node identity
    handshake_timeout_ms  MORI_GO_HANDSHAKE_TIMEOUT_MS    peer handshake bound
    totals_log_ms         MORI_GO_TOTALS_LOG_MS           log stats() byte totals
    tls_cert              MORI_GO_TLS_CERT                engine certificate
    tls_key               MORI_GO_TLS_KEY                 its private key
    tls_ca                MORI_GO_TLS_CA                  CA of the peers
    compression           MORI_GO_COMPRESSION             off|s2|zstd|auto
    compress_elem_size    MORI_GO_COMPRESS_ELEM_SIZE      shuffle element (2)
    ===================== =============================== =====================

    ``tcp_busy_poll_us`` is how long, in microseconds, a thread in
    ``wait_all`` or ``Wait`` polls the TCP socket for its acknowledgement
    before sleeping (default 50; negative: never): a small transfer then
    wakes no idle core, for at most that much CPU per wait.

    ``tcp_congestion`` is the TCP congestion control of the data streams
    (``cubic``, ``reno``, ... as the kernel has them); unset, the system's.
    Where the system's is ``bbr``, its pacing holds loopback and fast links
    well below their speed: ``cubic`` is the usual choice in a data center
    (docs/benchmarks.md). One the kernel lacks or does not allow the process
    fails ``create_backend``.

    ``compression`` compresses TCP writes to peers that have it on too (a
    peer with it off gets them uncompressed); ``auto`` compresses only
    while it pays on the link (docs/benchmarks.md). ``compress_elem_size``
    2 shuffles bf16/fp16 bytes by plane first, which helps zstd on K/V.

    The three ``tls_*`` files (PEM) turn on TLS 1.3 on the control and data
    planes, both ends presenting a certificate of the CA (docs/security.md);
    give all three or none, on every engine.

    The environment is read in Python when the :class:`IOEngine` is
    constructed (the Go runtime inside the library never sees variables set
    with ``os.environ`` after it started).
    """

    def __init__(
        self,
        host: str = "",
        port: int = 0,
        *,
        backend: Optional[str] = None,
        rdma_devices: Optional[str] = None,
        secret: Optional[str] = None,
        log_level: Optional[str] = None,
        transfer_timeout_ms: Optional[int] = None,
        tcp_streams: Optional[int] = None,
        tcp_busy_poll_us: Optional[int] = None,
        tcp_congestion: Optional[str] = None,
        gpu: Optional[str] = None,
        node_id: Optional[str] = None,
        handshake_timeout_ms: Optional[int] = None,
        totals_log_ms: Optional[int] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        tls_ca: Optional[str] = None,
        compression: Optional[str] = None,
        compress_elem_size: Optional[int] = None,
    ) -> None:
        self.host = host
        self.port = port
        self.backend = backend
        self.rdma_devices = rdma_devices
        self.secret = secret
        self.log_level = log_level
        self.transfer_timeout_ms = transfer_timeout_ms
        self.tcp_streams = tcp_streams
        self.tcp_busy_poll_us = tcp_busy_poll_us
        self.tcp_congestion = tcp_congestion
        self.gpu = gpu
        self.node_id = node_id
        self.handshake_timeout_ms = handshake_timeout_ms
        self.totals_log_ms = totals_log_ms
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.tls_ca = tls_ca
        self.compression = compression
        self.compress_elem_size = compress_elem_size

    def __repr__(self) -> str:
        return f"IOEngineConfig(host={self.host!r}, port={self.port!r})"


class BackendConfig:
    """Base class of backend configurations."""

    def to_json_dict(self) -> Dict[str, Any]:
        """The configuration as sent to the engine."""
        return {}


class RdmaBackendConfig(BackendConfig):
    """MORI-IO's RDMA backend configuration (positional order as MORI's:
    SGLang passes the first five positionally).

    mori-go passes ``qp_per_transfer``, ``post_batch_size``,
    ``num_worker_threads``, ``poll_cq_mode`` and ``enable_notification`` to
    the engine; the other fields are accepted and validated for
    compatibility. When no RDMA device is usable the engine serves
    ``create_backend(BackendType.RDMA, ...)`` over TCP (see MORI_GO_BACKEND).
    """

    def __init__(
        self,
        qp_per_transfer: int = 1,
        post_batch_size: int = -1,
        num_worker_threads: int = -1,
        poll_cq_mode: Union[PollCqMode, int] = PollCqMode.POLLING,
        enable_notification: bool = True,
        notif_per_qp: int = 1024,
        enable_transfer_chunking: bool = False,
        chunk_bytes: int = 65536,
        max_chunks_per_transfer: int = 64,
        num_nics_per_transfer: int = 1,
    ) -> None:
        self.qp_per_transfer = qp_per_transfer
        self.post_batch_size = post_batch_size
        self.num_worker_threads = num_worker_threads
        self.poll_cq_mode = poll_cq_mode
        self.enable_notification = enable_notification
        self.notif_per_qp = notif_per_qp
        self.enable_transfer_chunking = enable_transfer_chunking
        self.chunk_bytes = chunk_bytes
        self.max_chunks_per_transfer = max_chunks_per_transfer
        self.num_nics_per_transfer = num_nics_per_transfer
        # Read/write attributes of MORI's config (0 = backend default).
        self.max_send_wr = 0
        self.max_cqe_num = 0
        self.max_msg_sge = 0

    def validate(self) -> None:
        """Check MORI-IO's validation rules; raise InvalidArgsError."""
        def bad(msg: str) -> InvalidArgsError:
            return InvalidArgsError(f"RdmaBackendConfig: {msg}")

        if int(self.qp_per_transfer) < 1:
            raise bad(f"qp_per_transfer must be >= 1, got {self.qp_per_transfer}")
        if int(self.post_batch_size) != -1 and int(self.post_batch_size) < 1:
            raise bad(f"post_batch_size must be -1 (auto) or positive, got {self.post_batch_size}")
        if self.enable_notification and int(self.notif_per_qp) < 1:
            raise bad(f"notif_per_qp must be >= 1 when notification is on, got {self.notif_per_qp}")
        if int(self.max_chunks_per_transfer) < 1:
            raise bad(f"max_chunks_per_transfer must be >= 1, got {self.max_chunks_per_transfer}")
        if int(self.num_nics_per_transfer) < 1:
            raise bad(f"num_nics_per_transfer must be >= 1, got {self.num_nics_per_transfer}")
        if self.enable_transfer_chunking and int(self.chunk_bytes) < 4096:
            raise bad(f"chunk_bytes must be >= 4096 when chunking is on, got {self.chunk_bytes}")
        try:
            PollCqMode(int(self.poll_cq_mode))
        except ValueError:
            raise bad(f"poll_cq_mode must be PollCqMode.POLLING or PollCqMode.EVENT, got {self.poll_cq_mode!r}")

    def to_json_dict(self) -> Dict[str, Any]:
        return {
            "qp_per_transfer": int(self.qp_per_transfer),
            "post_batch_size": int(self.post_batch_size),
            "num_worker_threads": int(self.num_worker_threads),
            "poll_cq_mode": int(self.poll_cq_mode),
            "enable_notification": bool(self.enable_notification),
        }

    def __repr__(self) -> str:
        return (
            f"RdmaBackendConfig(qp_per_transfer={self.qp_per_transfer}, post_batch_size={self.post_batch_size}, "
            f"num_worker_threads={self.num_worker_threads}, poll_cq_mode={self.poll_cq_mode!r}, "
            f"enable_notification={self.enable_notification})"
        )


class XgmiBackendConfig(BackendConfig):
    """MORI-IO's XGMI configuration. mori-go has no XGMI backend:
    ``create_backend(BackendType.XGMI, ...)`` raises InvalidArgsError."""

    def __init__(self, num_streams: int = 64, num_events: int = 64) -> None:
        self.num_streams = num_streams
        self.num_events = num_events


class FabricBackendConfig(BackendConfig):
    """MORI-IO's FABRIC configuration. mori-go has no FABRIC backend."""

    def __init__(self, num_streams: int = 64, num_events: int = 64) -> None:
        self.num_streams = num_streams
        self.num_events = num_events
