// LD_PRELOAD shim: refuses arch_prctl(ARCH_REQ_XCOMP_PERM) so a process cannot enable AMX
// (ONNX Runtime's MLAS then takes its AVX-512 VNNI int8 kernels, as on a CPU without AMX).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <sys/syscall.h>
long syscall(long number, ...) {
  va_list ap; va_start(ap, number);
  long a[6]; for (int i = 0; i < 6; ++i) a[i] = va_arg(ap, long);
  va_end(ap);
  if (number == SYS_arch_prctl && a[0] == 0x1023) { errno = EPERM; return -1; }
  static long (*real)(long, ...) = 0;
  if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
  return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
