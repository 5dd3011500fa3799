package crdtlog

// SetSmallContext replaces the join's small-context threshold (-1: always scan the receiver)
// and returns a function that restores it. Tests that call it must not run in parallel with
// others.
func SetSmallContext(limit func(live int) int) (restore func()) {
	old := smallContext
	smallContext = limit
	return func() { smallContext = old }
}
