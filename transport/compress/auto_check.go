package compress

import "time"

// The check of the model by what batches achieve: the model's inputs come
// from samples on an idle core and from the link as seen in flight, and on
// a machine whose cores are busy (both ends of a test on one host, other
// jobs) compressing can cost far more than the samples say. So each
// batch's raw bytes over its time (submit to last acknowledgement) are
// kept per codec, and a codec whose batches are not vetoFactor faster than
// uncompressed ones is vetoed for a while (32 batches, doubling up to
// 1024 while it keeps failing). Until a codec has checkAfter batches
// measured, one batch at a time goes with it (a trial on a fast link costs
// one slow batch, not a window of them). While compressing, every
// offEvery-th batch goes uncompressed to keep off's figure current.
const (
	vetoFactor = 1.05
	vetoFirst  = 32
	vetoMax    = 1024
	offEvery   = 16
	checkAfter = 2  // batches of a codec measured before it is judged
	trialLost  = 64 // batches after which a trial never reported is given up
)

// Done records a batch of raw bytes sent with codec that took d from
// submission to its last acknowledgement.
func (a *Auto) Done(codec Codec, raw int, d time.Duration) {
	if d <= 0 || codec >= numCodecs {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tput[codec].add(float64(raw) / d.Seconds())
	a.trial[codec] = false
}

// verify turns the model's choice into the codec to use; a.mu is held.
func (a *Auto) verify(c Codec) Codec {
	if c == Off {
		return Off
	}
	if a.batches < a.vetoUntil[c] {
		return Off
	}
	t, off := &a.tput[c], &a.tput[Off]
	if off.n == 0 {
		return Off // nothing to compare with yet
	}
	if t.n < checkAfter {
		if a.trial[c] && a.batches-a.trialAt[c] < trialLost {
			return Off // one trial batch at a time
		}
		a.trial[c], a.trialAt[c] = true, a.batches
		return c
	}
	if t.n >= checkAfter {
		if t.v < off.v*vetoFactor {
			gap := max(a.vetoGap[c], vetoFirst)
			a.vetoUntil[c] = a.batches + gap
			a.vetoGap[c] = min(gap*2, vetoMax)
			a.vetoes[c]++
			*t = ewma{}
			return Off
		}
		a.vetoGap[c] = 0
	}
	a.sinceOff++
	if a.sinceOff >= offEvery {
		a.sinceOff = 0
		return Off
	}
	return c
}
