//go:build !linux

package bench

import "syscall"

// ChildAttr returns the process attributes of the processes under test (nothing special off
// Linux: an interrupted run may leave children behind).
func ChildAttr() *syscall.SysProcAttr { return nil }
