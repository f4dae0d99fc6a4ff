/* libktapdyn.so: a shared library of the boards' dynamic test program
 * (guest/ktapdyn.c), so probes on a library mapped at a load address only
 * the process knows have a target of our own on every board. */
__attribute__((noipa)) int ktapdyn_lib_tick(int i)
{
	return i + 1;
}
