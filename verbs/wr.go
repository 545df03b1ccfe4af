package verbs

import (
	"fmt"
)

// Opcode is enum ibv_wr_opcode.
type Opcode uint8

const (
	OpRDMAWrite        Opcode = 0
	OpRDMAWriteWithImm Opcode = 1
	OpSend             Opcode = 2
	OpSendWithImm      Opcode = 3
	OpRDMARead         Opcode = 4
)

func (o Opcode) String() string {
	switch o {
	case OpRDMAWrite:
		return "RDMA_WRITE"
	case OpRDMAWriteWithImm:
		return "RDMA_WRITE_WITH_IMM"
	case OpSend:
		return "SEND"
	case OpSendWithImm:
		return "SEND_WITH_IMM"
	case OpRDMARead:
		return "RDMA_READ"
	}
	return fmt.Sprintf("opcode(%d)", uint8(o))
}

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
	WCSuccess        WCStatus = 0
	WCLocLenErr      WCStatus = 1
	WCLocQPOpErr     WCStatus = 2
	WCLocEECOpErr    WCStatus = 3
	WCLocProtErr     WCStatus = 4
	WCWRFlushErr     WCStatus = 5
	WCMWBindErr      WCStatus = 6
	WCBadRespErr     WCStatus = 7
	WCLocAccessErr   WCStatus = 8
	WCRemInvReqErr   WCStatus = 9
	WCRemAccessErr   WCStatus = 10
	WCRemOpErr       WCStatus = 11
	WCRetryExcErr    WCStatus = 12
	WCRNRRetryExcErr WCStatus = 13
	WCLocRDDViolErr  WCStatus = 14
	WCRemInvRdReqErr WCStatus = 15
	WCRemAbortErr    WCStatus = 16
	WCInvEECNErr     WCStatus = 17
	WCInvEECStateErr WCStatus = 18
	WCFatalErr       WCStatus = 19
	WCRespTimeoutErr WCStatus = 20
	WCGeneralErr     WCStatus = 21
)

var wcStatusNames = [...]string{
	"SUCCESS", "LOC_LEN_ERR", "LOC_QP_OP_ERR", "LOC_EEC_OP_ERR", "LOC_PROT_ERR",
	"WR_FLUSH_ERR", "MW_BIND_ERR", "BAD_RESP_ERR", "LOC_ACCESS_ERR", "REM_INV_REQ_ERR",
	"REM_ACCESS_ERR", "REM_OP_ERR", "RETRY_EXC_ERR", "RNR_RETRY_EXC_ERR", "LOC_RDD_VIOL_ERR",
	"REM_INV_RD_REQ_ERR", "REM_ABORT_ERR", "INV_EECN_ERR", "INV_EEC_STATE_ERR", "FATAL_ERR",
	"RESP_TIMEOUT_ERR", "GENERAL_ERR",
}

// String returns the IBV_WC_* name.
func (s WCStatus) String() string {
	if int(s) < len(wcStatusNames) {
		return "IBV_WC_" + wcStatusNames[s]
	}
	return fmt.Sprintf("IBV_WC_STATUS(%d)", uint32(s))
}

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
	EventCQErr            AsyncEventType = 0
	EventQPFatal          AsyncEventType = 1
	EventQPReqErr         AsyncEventType = 2
	EventQPAccessErr      AsyncEventType = 3
	EventDeviceFatal      AsyncEventType = 8
	EventPortActive       AsyncEventType = 9
	EventPortErr          AsyncEventType = 10
	EventLIDChange        AsyncEventType = 11
	EventClientReregister AsyncEventType = 17
	EventGIDChange        AsyncEventType = 18
	asyncEventTypeMax     AsyncEventType = 19
)

func (t AsyncEventType) String() string {
	switch t {
	case EventCQErr:
		return "IBV_EVENT_CQ_ERR"
	case EventQPFatal:
		return "IBV_EVENT_QP_FATAL"
	case EventQPReqErr:
		return "IBV_EVENT_QP_REQ_ERR"
	case EventQPAccessErr:
		return "IBV_EVENT_QP_ACCESS_ERR"
	case EventDeviceFatal:
		return "IBV_EVENT_DEVICE_FATAL"
	case EventPortActive:
		return "IBV_EVENT_PORT_ACTIVE"
	case EventPortErr:
		return "IBV_EVENT_PORT_ERR"
	case EventLIDChange:
		return "IBV_EVENT_LID_CHANGE"
	case EventClientReregister:
		return "IBV_EVENT_CLIENT_REREGISTER"
	case EventGIDChange:
		return "IBV_EVENT_GID_CHANGE"
	}
	return fmt.Sprintf("IBV_EVENT(%d)", uint32(t))
}

// AsyncEvent is one asynchronous event. QPNum is set for QP events, CQ for
// CQ events, Port for port events.
type AsyncEvent struct {
	Type  AsyncEventType
	QPNum uint32
	CQ    CQ
	Port  uint8
}
