package compress

import "fmt"

// Codec is the compression of a frame on the wire.
type Codec uint8

// The codecs. Off is never framed: an uncompressed payload travels as is.
const (
	Off Codec = iota
	S2
	Zstd
	numCodecs
)

func (c Codec) String() string {
	switch c {
	case Off:
		return "off"
	case S2:
		return "s2"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// Mode is a compression setting: a fixed codec or Auto.
type Mode uint8

// The modes.
const (
	ModeOff Mode = iota
	ModeS2
	ModeZstd
	ModeAuto
)

func (m Mode) String() string {
	switch m {
	case ModeOff:
		return "off"
	case ModeS2:
		return "s2"
	case ModeZstd:
		return "zstd"
	case ModeAuto:
		return "auto"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode reads "off", "s2", "zstd" or "auto"; "" is off.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "off", "none":
		return ModeOff, nil
	case "s2":
		return ModeS2, nil
	case "zstd":
		return ModeZstd, nil
	case "auto":
		return ModeAuto, nil
	}
	return ModeOff, fmt.Errorf("compression %q: want off, s2, zstd or auto", s)
}

// Codec is the fixed codec of m (Off for ModeOff and ModeAuto).
func (m Mode) Codec() Codec {
	switch m {
	case ModeS2:
		return S2
	case ModeZstd:
		return Zstd
	}
	return Off
}
