package bench

import "syscall"

// ChildAttr returns the process attributes of the processes under test: they are killed when
// the bench process dies, so an interrupted run leaves nothing behind.
func ChildAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
