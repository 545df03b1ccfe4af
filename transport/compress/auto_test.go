package compress

import (
	"testing"
	"time"

	"github.com/mori-go/mori-go/internal/kvdata"
	"github.com/stretchr/testify/require"
)

// drive runs batches of data through the policy as a data plane would and
// returns how many were sent with each codec and how many were sampled.
// A batch sent with a codec takes took[codec] (off: one second).
func drive(a *Auto, data []byte, elem, batches int, took ...time.Duration) (chosen [numCodecs]int, samples int) {
	took = append(took, time.Second, time.Second, time.Second)
	for range batches {
		codec, sample := a.Choose()
		if sample {
			samples++
			a.Sample(elem, [][]byte{data})
		}
		chosen[codec]++
		a.Done(codec, len(data), took[codec])
	}
	return chosen, samples
}

func TestAutoCompressesOnSlowLink(t *testing.T) {
	c := newTest(t, 2)
	a := NewAuto(c, AutoConfig{})
	a.ObserveLink(64<<10, time.Second) // 64 KiB/s: any codec that shrinks pays
	chosen, _ := drive(a, payload(t, kvdata.BF16, 256<<10, 1), 2, 50, time.Second, time.Second, 700*time.Millisecond)
	st := a.Stats()
	require.GreaterOrEqual(t, chosen[Zstd], 44, "zstd shrinks shuffled bf16 most: %+v", st)
	require.LessOrEqual(t, chosen[Off], 5, "the first batch and one in 16 to keep off's figure: %+v", st)
	require.Less(t, st.Ratio[Zstd], 0.8)
	require.Zero(t, st.Vetoes[Zstd])
}

func TestAutoStaysOffOnRandomBytes(t *testing.T) {
	c := newTest(t, 2)
	a := NewAuto(c, AutoConfig{})
	a.ObserveLink(1<<20, time.Second)
	chosen, _ := drive(a, payload(t, kvdata.Random, 256<<10, 1), 2, 50)
	require.Equal(t, 50, chosen[Off])
	require.Equal(t, 1.0, a.Stats().Ratio[S2], "random bytes do not shrink")
}

func TestAutoBacksOffOnFastLink(t *testing.T) {
	c := newTest(t, 2)
	a := NewAuto(c, AutoConfig{})
	a.ObserveLink(1<<40, time.Second) // 1 TB/s: no codec keeps up
	chosen, samples := drive(a, payload(t, kvdata.BF16, 256<<10, 1), 2, 5000)
	require.Equal(t, 5000, chosen[Off])
	require.LessOrEqual(t, samples, 14, "samples grow rare when compression cannot pay")
}

func TestAutoWaitsForTheLink(t *testing.T) {
	c := newTest(t, 2)
	a := NewAuto(c, AutoConfig{})
	chosen, _ := drive(a, payload(t, kvdata.BF16, 256<<10, 1), 2, 10)
	require.Equal(t, 10, chosen[Off], "no link measurement yet: send uncompressed")
	require.Zero(t, a.Stats().Link)
}

func TestAutoMeasuresTheLink(t *testing.T) {
	c := newTest(t, 1)
	a := NewAuto(c, AutoConfig{})
	a.LinkStart()
	a.LinkStart()
	a.LinkDone(linkWindow / 2)
	require.Zero(t, a.Stats().Link, "half a window is not a measurement")
	time.Sleep(linkWindowTime)
	a.LinkDone(linkWindow / 2)
	link := a.Stats().Link
	require.Positive(t, link)
	require.LessOrEqual(t, link, float64(linkWindow)/linkWindowTime.Seconds(), "bytes over at least the busy time slept")
}

// A long slow window and a short burst weigh by their length: the link is
// bytes over seconds, not the mean of the two rates.
func TestAutoWeighsLinkWindowsByTime(t *testing.T) {
	c := newTest(t, 1)
	a := NewAuto(c, AutoConfig{})
	a.ObserveLink(1<<20, 600*time.Millisecond)
	a.ObserveLink(3<<20, 20*time.Millisecond)
	link := a.Stats().Link
	require.Greater(t, link, float64(4<<20)/0.62*0.5)
	require.Less(t, link, float64(4<<20)/0.62*1.5, "not the mean of 1.7 and 157 MB/s")
}

// When compressed batches turn out slower than plain ones, whatever the
// model says, auto backs off, and tries again ever more rarely.
func TestAutoVetoesACodecThatDoesNotDeliver(t *testing.T) {
	c := newTest(t, 2)
	a := NewAuto(c, AutoConfig{})
	a.ObserveLink(64<<10, time.Second) // the model says: compress
	chosen, _ := drive(a, payload(t, kvdata.BF16, 256<<10, 1), 2, 1000, time.Second, 2*time.Second, 2*time.Second)
	st := a.Stats()
	require.GreaterOrEqual(t, chosen[Off], 970, "at most a few percent of batches pay for the trials: %+v", st)
	require.Positive(t, st.Vetoes[Zstd])
}
