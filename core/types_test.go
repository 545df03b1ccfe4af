package core

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCoalesceRanges(t *testing.T) {
	cases := []struct {
		name string
		in   []Range
		max  uint64
		want []Range
	}{
		{"empty", nil, 0, nil},
		{"one", []Range{{1, 2, 3}}, 0, []Range{{1, 2, 3}}},
		{"contiguous both sides", []Range{{0, 100, 10}, {10, 110, 5}, {15, 115, 1}}, 0, []Range{{0, 100, 16}}},
		{"contiguous locally only", []Range{{0, 100, 10}, {10, 111, 5}}, 0, []Range{{0, 100, 10}, {10, 111, 5}}},
		{"contiguous remotely only", []Range{{0, 100, 10}, {11, 110, 5}}, 0, []Range{{0, 100, 10}, {11, 110, 5}}},
		{"order kept, no sorting", []Range{{10, 110, 5}, {0, 100, 10}}, 0, []Range{{10, 110, 5}, {0, 100, 10}}},
		{"max size", []Range{{0, 0, 4}, {4, 4, 4}, {8, 8, 4}}, 8, []Range{{0, 0, 8}, {8, 8, 4}}},
		{"max size exact", []Range{{0, 0, 4}, {4, 4, 4}}, 8, []Range{{0, 0, 8}}},
		{"zero size not merged", []Range{{0, 0, 4}, {4, 4, 0}, {4, 4, 4}}, 0, []Range{{0, 0, 4}, {4, 4, 0}, {4, 4, 4}}},
		{"zero size first not merged", []Range{{0, 0, 0}, {0, 0, 4}}, 0, []Range{{0, 0, 0}, {0, 0, 4}}},
		{"wrap not merged", []Range{{^uint64(0), ^uint64(0), 1}, {0, 0, 4}}, 0, []Range{{^uint64(0), ^uint64(0), 1}, {0, 0, 4}}},
		{"size wrap not merged", []Range{{0, 0, 1 << 63}, {1 << 63, 1 << 63, 1 << 63}}, 0, []Range{{0, 0, 1 << 63}, {1 << 63, 1 << 63, 1 << 63}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := append([]Range(nil), c.in...)
			got := CoalesceRanges(in, c.max)
			require.Equal(t, c.want, got)
			var before, after uint64
			for _, r := range c.in {
				before += r.Size
			}
			for _, r := range got {
				after += r.Size
			}
			require.Equal(t, before, after, "bytes are neither lost nor added")
		})
	}
}

func TestEnumStrings(t *testing.T) {
	require.Equal(t, "tcp", BackendTCP.String())
	require.Equal(t, "rdma", BackendRDMA.String())
	require.Equal(t, "xgmi", BackendXGMI.String())
	require.Equal(t, "fabric", BackendFabric.String())
	require.Equal(t, "BackendType(9)", BackendType(9).String())
	require.Equal(t, "cpu", LocationCPU.String())
	require.Equal(t, "gpu", LocationGPU.String())
	require.Equal(t, "unknown", LocationUnknown.String())
	require.Equal(t, "write", OpWrite.String())
	require.Equal(t, "read", OpRead.String())
	require.Equal(t, "Op(0)", Op(0).String())
}
