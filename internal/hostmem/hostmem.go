// Package hostmem allocates page-aligned host memory outside the Go heap,
// as the NIC and remote peers require of memory they write into. Tests,
// benchmarks and the demo use it in place of the C or GPU memory an
// application registers.
package hostmem

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Buffer is an anonymous private mapping.
type Buffer struct {
	b []byte
}

// Alloc maps n bytes of zeroed memory.
func Alloc(n int) (*Buffer, error) {
	if n <= 0 {
		return nil, fmt.Errorf("hostmem: allocate %d bytes: size must be positive", n)
	}
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("hostmem: allocate %d bytes: %w", n, err)
	}
	return &Buffer{b: b}, nil
}

// Bytes returns the memory as a slice; it is invalid after Free.
func (m *Buffer) Bytes() []byte { return m.b }

// Addr returns the address of the first byte.
func (m *Buffer) Addr() uintptr { return uintptr(unsafe.Pointer(&m.b[0])) }

// Len returns the size in bytes.
func (m *Buffer) Len() int { return len(m.b) }

// Free unmaps the memory. Calling it twice is harmless.
func (m *Buffer) Free() error {
	if m.b == nil {
		return nil
	}
	err := unix.Munmap(m.b)
	m.b = nil
	return err
}
