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
func rawRead(fd int, p []byte) (int, syscall.Errno) { return rawIO(unix.SYS_READ, fd, p) }

// rawWrite is write(2) to a non-blocking socket.
func rawWrite(fd int, p []byte) (int, syscall.Errno) { return rawIO(unix.SYS_WRITE, fd, p) }

// rawIO is read(2) or write(2) (trap) of p.
func rawIO(trap uintptr, fd int, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	return rawCall(trap, fd, unsafe.Pointer(&p[0]), len(p))
}

// rawVec is readv(2) or writev(2) (trap) of a non-blocking socket.
func rawVec(trap uintptr, fd int, iov []unix.Iovec) (int, syscall.Errno) {
	return rawCall(trap, fd, unsafe.Pointer(&iov[0]), len(iov))
}

// appendIovecs appends to iov the iovecs of up to maxIovecs (IOV_MAX) of
// bufs, for rawVec.
func appendIovecs(iov []unix.Iovec, bufs [][]byte) []unix.Iovec {
	for _, b := range bufs[:min(len(bufs), maxIovecs)] {
		v := unix.Iovec{}
		if len(b) > 0 {
			v.Base = &b[0]
			v.SetLen(len(b))
		}
		iov = append(iov, v)
	}
	return iov
}

// rawCall is the raw system call trap(fd, p, n), retried on EINTR.
func rawCall(trap uintptr, fd int, p unsafe.Pointer, n int) (int, syscall.Errno) {
	for {
		r, _, e := syscall.RawSyscall(trap, uintptr(fd), uintptr(p), uintptr(n))
		if e != syscall.EINTR {
			if e != 0 {
				return 0, e
			}
			return int(r), 0
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
