//go:build race

package localstore

const raceEnabled = true
