package tcp

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Raw system calls on sockets in non-blocking mode. An ordinary system
// call tells the Go scheduler first (entersyscall), so that it can hand the
// thread's processor to others if the call blocks, and that step wakes the
// scheduler's monitor thread (sysmon) whenever it sleeps, which it does
// whenever the process has been idle for a moment: between two frames of
// a ping-pong of small transfers. Each wake is a futex system call more,
// and on an idle VM an interrupt to a halted vCPU, on both sides of every
// small transfer. A call on a non-blocking socket never blocks, so the
// raw ones below skip that step; waiting for the socket is left to the
// netpoller (RawConn.Read and Write) or to poll(2) (drive.go).

// rawRead is read(2) of a non-blocking socket.
func rawRead(fd int, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	for {
		n, _, e := syscall.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e != syscall.EINTR {
			if e != 0 {
				return 0, e
			}
			return int(n), 0
		}
	}
}

// rawWrite is write(2) to a non-blocking socket.
func rawWrite(fd int, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	for {
		n, _, e := syscall.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e != syscall.EINTR {
			if e != 0 {
				return 0, e
			}
			return int(n), 0
		}
	}
}

// rawVec is readv(2) or writev(2) (trap) of a non-blocking socket.
func rawVec(trap uintptr, fd int, iov []unix.Iovec) (int, syscall.Errno) {
	for {
		n, _, e := syscall.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		if e != syscall.EINTR {
			if e != 0 {
				return 0, e
			}
			return int(n), 0
		}
	}
}

// rawTCPState returns the TCP state of the socket (the first byte of
// TCP_INFO: TCP_ESTABLISHED, ...); ok is false when the kernel cannot tell.
func rawTCPState(fd int) (state uint8, ok bool) {
	var info [8]byte // tcpi_state first; the kernel copies what fits
	l := uint32(len(info))
	_, _, e := syscall.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_INFO,
		uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 || l < 1 {
		return 0, false
	}
	return info[0], true
}
