//go:build race

package replay

// raceEnabled: the race detector changes memory use; bounds are not checked.
const raceEnabled = true
