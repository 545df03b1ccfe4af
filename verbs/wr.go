package verbs

//go:generate go tool stringer -type=Opcode,WCStatus,AsyncEventType -linecomment -output=wr_string.go

// Opcode is enum ibv_wr_opcode.
type Opcode uint8

const (
	OpRDMAWrite        Opcode = 0 // RDMA_WRITE
	OpRDMAWriteWithImm Opcode = 1 // RDMA_WRITE_WITH_IMM
	OpSend             Opcode = 2 // SEND
	OpSendWithImm      Opcode = 3 // SEND_WITH_IMM
	OpRDMARead         Opcode = 4 // RDMA_READ
)

// SendFlags is a set of IBV_SEND_* flags.
type SendFlags uint32

const (
	SendFence     SendFlags = 1
	SendSignaled  SendFlags = 2
	SendSolicited SendFlags = 4
	SendInline    SendFlags = 8
)

// SGE is one scatter/gather element (struct ibv_sge).
type SGE struct {
	Addr   uint64
	Length uint32
	LKey   uint32
}

// MaxSGE is the most SGEs per work request the layers here pass.
const MaxSGE = 4

// SendWR is one send work request. With SendInline the SGEs point at
// memory that is copied at post time and needs no lkey.
type SendWR struct {
	ID         uint64
	Opcode     Opcode
	Flags      SendFlags
	SGL        []SGE
	RemoteAddr uint64
	RKey       uint32
	Imm        uint32 // host order; sent big-endian as verbs requires
}

// RecvWR is one receive work request.
type RecvWR struct {
	ID  uint64
	SGL []SGE
}

// WCStatus is enum ibv_wc_status.
type WCStatus uint32

const (
	WCSuccess        WCStatus = 0  // IBV_WC_SUCCESS
	WCLocLenErr      WCStatus = 1  // IBV_WC_LOC_LEN_ERR
	WCLocQPOpErr     WCStatus = 2  // IBV_WC_LOC_QP_OP_ERR
	WCLocEECOpErr    WCStatus = 3  // IBV_WC_LOC_EEC_OP_ERR
	WCLocProtErr     WCStatus = 4  // IBV_WC_LOC_PROT_ERR
	WCWRFlushErr     WCStatus = 5  // IBV_WC_WR_FLUSH_ERR
	WCMWBindErr      WCStatus = 6  // IBV_WC_MW_BIND_ERR
	WCBadRespErr     WCStatus = 7  // IBV_WC_BAD_RESP_ERR
	WCLocAccessErr   WCStatus = 8  // IBV_WC_LOC_ACCESS_ERR
	WCRemInvReqErr   WCStatus = 9  // IBV_WC_REM_INV_REQ_ERR
	WCRemAccessErr   WCStatus = 10 // IBV_WC_REM_ACCESS_ERR
	WCRemOpErr       WCStatus = 11 // IBV_WC_REM_OP_ERR
	WCRetryExcErr    WCStatus = 12 // IBV_WC_RETRY_EXC_ERR
	WCRNRRetryExcErr WCStatus = 13 // IBV_WC_RNR_RETRY_EXC_ERR
	WCLocRDDViolErr  WCStatus = 14 // IBV_WC_LOC_RDD_VIOL_ERR
	WCRemInvRdReqErr WCStatus = 15 // IBV_WC_REM_INV_RD_REQ_ERR
	WCRemAbortErr    WCStatus = 16 // IBV_WC_REM_ABORT_ERR
	WCInvEECNErr     WCStatus = 17 // IBV_WC_INV_EECN_ERR
	WCInvEECStateErr WCStatus = 18 // IBV_WC_INV_EEC_STATE_ERR
	WCFatalErr       WCStatus = 19 // IBV_WC_FATAL_ERR
	WCRespTimeoutErr WCStatus = 20 // IBV_WC_RESP_TIMEOUT_ERR
	WCGeneralErr     WCStatus = 21 // IBV_WC_GENERAL_ERR
)

// WCOpcode is enum ibv_wc_opcode.
type WCOpcode uint32

const (
	WCSend           WCOpcode = 0
	WCRDMAWrite      WCOpcode = 1
	WCRDMARead       WCOpcode = 2
	WCRecv           WCOpcode = 128
	WCRecvRDMAWithIm WCOpcode = 129
)

// WCFlagWithImm is IBV_WC_WITH_IMM.
const WCFlagWithImm = 1 << 1

// WorkCompletion is struct ibv_wc, flattened.
type WorkCompletion struct {
	ID        uint64
	Status    WCStatus
	Opcode    WCOpcode
	VendorErr uint32
	ByteLen   uint32
	Imm       uint32 // host order, valid with WCFlagWithImm
	Flags     uint32
	QPNum     uint32
}

// AsyncEventType is enum ibv_event_type.
type AsyncEventType uint32

const (
	EventCQErr            AsyncEventType = 0  // IBV_EVENT_CQ_ERR
	EventQPFatal          AsyncEventType = 1  // IBV_EVENT_QP_FATAL
	EventQPReqErr         AsyncEventType = 2  // IBV_EVENT_QP_REQ_ERR
	EventQPAccessErr      AsyncEventType = 3  // IBV_EVENT_QP_ACCESS_ERR
	EventDeviceFatal      AsyncEventType = 8  // IBV_EVENT_DEVICE_FATAL
	EventPortActive       AsyncEventType = 9  // IBV_EVENT_PORT_ACTIVE
	EventPortErr          AsyncEventType = 10 // IBV_EVENT_PORT_ERR
	EventLIDChange        AsyncEventType = 11 // IBV_EVENT_LID_CHANGE
	EventClientReregister AsyncEventType = 17 // IBV_EVENT_CLIENT_REREGISTER
	EventGIDChange        AsyncEventType = 18 // IBV_EVENT_GID_CHANGE
)

// AsyncEvent is one asynchronous event. QPNum is set for QP events, CQ for
// CQ events, Port for port events.
type AsyncEvent struct {
	Type  AsyncEventType
	QPNum uint32
	CQ    CQ
	Port  uint8
}
