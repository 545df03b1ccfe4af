// Package kvdata makes test and benchmark payloads that look like KV cache:
// bf16 values with per-channel scales and a few outlier channels, the same
// in fp8 (e4m3), and incompressible random bytes.
package kvdata

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
)

// Kind names a kind of payload.
type Kind string

// The kinds.
const (
	BF16   Kind = "bf16"
	FP8    Kind = "fp8"
	Random Kind = "random"
)

// Channels is the width of a token row (8 heads × 128 head dim).
const Channels = 1024

// Fill fills b with payload of the given kind, the same for the same seed.
func Fill(kind Kind, b []byte, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 0x6b76))
	switch kind {
	case BF16:
		scales := channelScales(r)
		for i := 0; i+2 <= len(b); i += 2 {
			v := float32(r.NormFloat64() * scales[(i/2)%Channels])
			binary.LittleEndian.PutUint16(b[i:], BF16Bits(v))
		}
		if len(b)%2 == 1 {
			b[len(b)-1] = 0
		}
	case FP8:
		scales := channelScales(r)
		for i := range b {
			b[i] = E4M3Bits(float32(r.NormFloat64() * scales[i%Channels] * 20))
		}
	case Random:
		for i := 0; i < len(b); i += 8 {
			var w [8]byte
			binary.LittleEndian.PutUint64(w[:], r.Uint64())
			copy(b[i:], w[:])
		}
	default:
		return fmt.Errorf("kvdata: unknown kind %q (bf16, fp8, random)", kind)
	}
	return nil
}

// channelScales draws a log-normal scale per channel, about 2% of the
// channels being outliers twenty times larger, as in real K/V.
func channelScales(r *rand.Rand) []float64 {
	s := make([]float64, Channels)
	for c := range s {
		s[c] = 0.05 * math.Exp(0.5*r.NormFloat64())
		if r.IntN(50) == 0 {
			s[c] *= 20
		}
	}
	return s
}

// BF16Bits rounds v to bfloat16 (to nearest, ties to even).
func BF16Bits(v float32) uint16 {
	u := math.Float32bits(v)
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// E4M3Bits rounds v to fp8 e4m3fn (saturating at ±448).
func E4M3Bits(v float32) uint8 {
	var sign uint8
	if v < 0 {
		sign, v = 0x80, -v
	}
	if v >= 448 {
		return sign | 0x7e
	}
	if v < 1.0/512 {
		return sign
	}
	frac, exp := math.Frexp(float64(v)) // v = frac × 2^exp, frac in [0.5, 1)
	e := exp - 1 + 7                    // biased exponent of 1.m × 2^(exp-1)
	if e <= 0 {                         // subnormal: m × 2^-9
		return sign | uint8(math.Round(float64(v)*512))
	}
	m := int(math.Round((frac*2 - 1) * 8))
	if m == 8 {
		m, e = 0, e+1
	}
	if e > 15 || (e == 15 && m == 7) {
		return sign | 0x7e
	}
	return sign | uint8(e)<<3 | uint8(m)
}
