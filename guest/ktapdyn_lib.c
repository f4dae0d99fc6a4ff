/* libktapdyn.so: a shared library of the boards' dynamic test program
 * (guest/ktapdyn.c), so probes on a library mapped at a load address only
 * the process knows have a target of our own on every board. */
__attribute__((noipa)) int ktapdyn_lib_tick(int i)
{
	return i + 1;
}

/* A string argument in user memory, for str(arg1) in a user probe. */
__attribute__((noipa)) int ktapdyn_lib_say(const char *msg)
{
	return msg[0];
}
