package verbs

//go:generate go tool stringer -type=PortState,LinkLayer,GIDType,QPState -linecomment -output=attr_string.go

import (
	"net"
)

// DeviceAttr holds the device limits the backend uses.
type DeviceAttr struct {
	PhysPortCnt     uint8
	MaxQPWR         int
	MaxSGE          int
	MaxCQE          int
	MaxQPRdAtom     int
	MaxQPInitRdAtom int
}

// PortState is enum ibv_port_state.
type PortState uint8

const (
	PortNop    PortState = 0 // NOP
	PortDown   PortState = 1 // DOWN
	PortInit   PortState = 2 // INIT
	PortArmed  PortState = 3 // ARMED
	PortActive PortState = 4 // ACTIVE
)

// LinkLayer is the IBV_LINK_LAYER_* of a port.
type LinkLayer uint8

const (
	LinkUnspecified LinkLayer = 0 // InfiniBand
	LinkInfiniBand  LinkLayer = 1 // InfiniBand
	LinkEthernet    LinkLayer = 2 // Ethernet
)

// MTU is enum ibv_mtu.
type MTU uint8

const (
	MTU256  MTU = 1
	MTU512  MTU = 2
	MTU1024 MTU = 3
	MTU2048 MTU = 4
	MTU4096 MTU = 5
)

// Bytes returns the MTU in bytes, 0 if invalid.
func (m MTU) Bytes() int {
	if m < MTU256 || m > MTU4096 {
		return 0
	}
	return 128 << m
}

// MTUFromBytes maps 256..4096 to an MTU; ok is false for other values.
func MTUFromBytes(n int) (MTU, bool) {
	for m := MTU256; m <= MTU4096; m++ {
		if m.Bytes() == n {
			return m, true
		}
	}
	return 0, false
}

// PortAttr holds the port attributes the backend uses.
type PortAttr struct {
	State       PortState
	MaxMTU      MTU
	ActiveMTU   MTU
	GIDTableLen int
	MaxMsgSize  uint32
	LID         uint16
	LinkLayer   LinkLayer
	ActiveWidth uint8
	ActiveSpeed uint8
}

// GID is a 16-byte port address.
type GID [16]byte

// IsZero reports an unused GID table entry.
func (g GID) IsZero() bool { return g == GID{} }

func (g GID) String() string { return net.IP(g[:]).String() }

// GIDType is enum ibv_gid_type.
type GIDType uint8

const (
	GIDTypeIB     GIDType = 0 // IB
	GIDTypeRoCEv1 GIDType = 1 // RoCE v1
	GIDTypeRoCEv2 GIDType = 2 // RoCE v2
)

// GIDEntry is one GID table entry.
type GIDEntry struct {
	Index int
	GID   GID
	Type  GIDType
	// Netdev is the network interface the GID belongs to (RoCE; sysfs
	// gid_attrs/ndevs), empty when unknown.
	Netdev string
}

// Access is a set of IBV_ACCESS_* flags.
type Access uint32

const (
	AccessLocalWrite      Access = 1
	AccessRemoteWrite     Access = 2
	AccessRemoteRead      Access = 4
	AccessRemoteAtomic    Access = 8
	AccessRelaxedOrdering Access = 1 << 20
)

// QPState is enum ibv_qp_state.
type QPState uint8

const (
	QPReset QPState = 0 // RESET
	QPInit  QPState = 1 // INIT
	QPRTR   QPState = 2 // RTR
	QPRTS   QPState = 3 // RTS
	QPSQD   QPState = 4 // SQD
	QPSQE   QPState = 5 // SQE
	QPError QPState = 6 // ERR
)

// QPAttrMask is a set of IBV_QP_* attribute bits.
type QPAttrMask uint32

const (
	QPAttrState         QPAttrMask = 1 << 0
	QPAttrAccessFlags   QPAttrMask = 1 << 3
	QPAttrPKeyIndex     QPAttrMask = 1 << 4
	QPAttrPort          QPAttrMask = 1 << 5
	QPAttrAV            QPAttrMask = 1 << 7
	QPAttrPathMTU       QPAttrMask = 1 << 8
	QPAttrTimeout       QPAttrMask = 1 << 9
	QPAttrRetryCnt      QPAttrMask = 1 << 10
	QPAttrRNRRetry      QPAttrMask = 1 << 11
	QPAttrRQPSN         QPAttrMask = 1 << 12
	QPAttrMaxQPRdAtomic QPAttrMask = 1 << 13
	QPAttrMinRNRTimer   QPAttrMask = 1 << 15
	QPAttrSQPSN         QPAttrMask = 1 << 16
	QPAttrMaxDestRdAtom QPAttrMask = 1 << 17
	QPAttrDestQPN       QPAttrMask = 1 << 20
)

// The attribute masks an RC QP needs for each transition (ibv_modify_qp).
const (
	QPMaskInit = QPAttrState | QPAttrPKeyIndex | QPAttrPort | QPAttrAccessFlags
	QPMaskRTR  = QPAttrState | QPAttrAV | QPAttrPathMTU | QPAttrDestQPN | QPAttrRQPSN | QPAttrMaxDestRdAtom | QPAttrMinRNRTimer
	QPMaskRTS  = QPAttrState | QPAttrTimeout | QPAttrRetryCnt | QPAttrRNRRetry | QPAttrSQPSN | QPAttrMaxQPRdAtomic
)

// AHAttr is the address vector of a connected QP (struct ibv_ah_attr).
type AHAttr struct {
	DLID         uint16
	SL           uint8
	Port         uint8
	IsGlobal     bool
	DGID         GID
	FlowLabel    uint32
	SGIDIndex    uint8
	HopLimit     uint8
	TrafficClass uint8
}

// QPAttr is struct ibv_qp_attr, reduced to what an RC QP needs.
type QPAttr struct {
	State         QPState
	Port          uint8
	PKeyIndex     uint16
	Access        Access
	PathMTU       MTU
	DestQPN       uint32
	RQPSN         uint32
	SQPSN         uint32
	MaxDestRdAtom uint8
	MaxRdAtomic   uint8
	MinRNRTimer   uint8
	Timeout       uint8
	RetryCnt      uint8
	RNRRetry      uint8
	AH            AHAttr
}

// QPInitAttr creates an RC QP.
type QPInitAttr struct {
	SendCQ, RecvCQ CQ
	MaxSendWR      int
	MaxRecvWR      int
	MaxSendSGE     int
	MaxRecvSGE     int
	MaxInlineData  int
}
