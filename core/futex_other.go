//go:build !linux

package core

import (
	"sync/atomic"
	"time"
)

// Without futexes BlockThread waits as ParkGoroutine does.
const haveFutex = false

func futexWait(*atomic.Uint32, uint32, time.Duration) {}

func futexWake(*atomic.Uint32) {}
