/* main.c - ktaprun: runs a KBC image on this board through ktapvm.ko, or,
 * for the ebpf backend, as eBPF programs without the module (ebpf.c).
 *
 *   ktaprun [options] FILE.kbc [-- CMD ARGS...]
 *
 * Exit status: the script's exit(code), 3 after a runtime error, 1 when the
 * image cannot be loaded, verified or attached, 2 for usage errors. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "ktaprun.h"
#include "session.h"
#include "serve.h"

static int usage(FILE *to, int status)
{
	fprintf(to,
		"usage: ktaprun [options] FILE.kbc [-- CMD ARGS...]\n"
		"Runs a compiled ktap script (ktap compile -t %s) until CMD exits,\n"
		"the script calls exit(), or SIGINT/SIGTERM. Images of the ktapvm backend\n"
		"run through %s (ktapvm.ko); images of the ebpf backend (ktap compile\n"
		"--backend ebpf) run without the module, as eBPF programs (bpf(2)).\n"
		"  -m, --module PATH     ktapvm.ko to load when %s is missing\n"
		"                        (default: ktapvm.ko next to ktaprun)\n"
		"  -r, --raw             write the raw output records to stdout\n"
		"  -k, --kallsyms PATH   symbols for stacks and %%p (default /proc/kallsyms)\n"
		"  -F, --format text|json\n"
		"                        text: what the script prints (default); json: one\n"
		"                        JSON object per output record, then a status object\n"
		"  -f, --format-records RECORDS\n"
		"                        only format a saved record stream (from --raw) for\n"
		"                        FILE.kbc, then exit with the session's status\n"
		"  -R, --resolve         print the attach table (globs, tracepoint fields)\n"
		"                        for FILE.kbc on this kernel, then exit\n"
		"  -S, --serve DEV[:BAUD]\n"
		"                        serial agent for `ktap run --serial`: receive files\n"
		"                        and run commands over DEV (a tty, or - for stdin)\n"
		"  -H, --sha256 FILE...  print the SHA-256 and size of each FILE\n"
		"  -V, --version         print the version and target\n"
		"  -h, --help            this text\n",
		KTAP_TARGET_NAME, KTAP_DEVICE, KTAP_DEVICE);
	return status;
}

static int parse_args(int argc, char **argv, struct options *o)
{
	static const struct option longs[] = {
		{ "module", required_argument, NULL, 'm' },
		{ "raw", no_argument, NULL, 'r' },
		{ "kallsyms", required_argument, NULL, 'k' },
		{ "format", required_argument, NULL, 'F' },
		{ "format-records", required_argument, NULL, 'f' },
		{ "resolve", no_argument, NULL, 'R' },
		{ "version", no_argument, NULL, 'V' },
		{ "serve", required_argument, NULL, 'S' },
		{ "sha256", no_argument, NULL, 'H' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	memset(o, 0, sizeof(*o));
	opterr = 0;
	/* '+': stop at FILE.kbc, so the workload's own options stay its own. */
	while ((c = getopt_long(argc, argv, "+m:rk:F:f:RVhS:H", longs, NULL)) != -1) {
		switch (c) {
		case 'm': o->module = optarg; break;
		case 'r': o->raw = 1; break;
		case 'k': o->kallsyms = optarg; break;
		case 'F':
			if (strcmp(optarg, "text") && strcmp(optarg, "json")) {
				fprintf(stderr, "ktaprun: --format takes text or json, not '%s'\n",
					optarg);
				return -1;
			}
			o->json = !strcmp(optarg, "json");
			break;
		case 'f': o->records = optarg; break;
		case 'R': o->resolve = 1; break;
		case 'V': o->version = 1; return 0;
		case 'S': o->serve = optarg; return 0;
		case 'H': o->sha256 = optind; return 0;
		case 'h': o->help = 1; return 0;
		default:
			fprintf(stderr, "ktaprun: unknown or incomplete option '%s'\n",
				argv[optind - 1]);
			return -1;
		}
	}
	if (optind >= argc) {
		fputs("ktaprun: no image given\n", stderr);
		return -1;
	}
	o->image = argv[optind++];
	if (optind < argc && !strcmp(argv[optind], "--"))
		optind++;
	else if (optind < argc) {
		fprintf(stderr, "ktaprun: put '--' before the command to run ('%s')\n", argv[optind]);
		return -1;
	}
	if (optind < argc) {
		o->cmd = &argv[optind];
	}
	if (o->records && (o->cmd || o->raw)) {
		fputs("ktaprun: --format-records takes no command and no --raw\n", stderr);
		return -1;
	}
	if (o->raw && o->json) {
		fputs("ktaprun: --raw writes the records themselves: no --format json with it\n",
		      stderr);
		return -1;
	}
	return 0;
}

/* Reads and checks the image here too: the message names the file, and a
 * mismatched target is refused before anything touches the kernel. */
static struct ktap_image *load_image(const char *path, unsigned char **data, size_t *size)
{
	struct ktap_image *img = NULL;
	char err[256];

	*data = read_whole(path, size);
	if (!*data) {
		fprintf(stderr, "ktaprun: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	if (ktap_load(*data, *size, &img, err, sizeof(err)) != 0) {
		fprintf(stderr, "ktaprun: %s: %s\n", path, err);
		free(*data);
		return NULL;
	}
	return img;
}

/* --format-records: what the host does with a --raw capture. */
static int format_file(const struct options *o, const struct ktap_image *img)
{
	struct formatter f = { img, NULL, o->json };
	struct stream s;
	unsigned char *data;
	size_t len;
	int status;

	data = read_whole(o->records, &len);
	if (!data) {
		fprintf(stderr, "ktaprun: %s: %s\n", o->records, strerror(errno));
		return KTAP_EXIT_LOAD_ERROR;
	}
	if (o->kallsyms)
		f.syms = symtab_load(o->kallsyms);
	stream_init(&s, &f, 0);
	stream_feed(&s, data, len);
	status = stream_finish(&s, o->records);
	stream_free(&s);
	symtab_free((struct symtab *)f.syms);
	free(data);
	return status;
}

/* --resolve: what attaching would send, without a device. */
static int resolve(const struct ktap_image *img, const char *file)
{
	struct attach_table t;
	char err[KTAP_ERRLEN];

	if (attach_build(img, &t, err, sizeof(err)) < 0) {
		fprintf(stderr, "ktaprun: %s: %s\n", file, err);
		uprobes_remove();
		return KTAP_EXIT_LOAD_ERROR;
	}
	attach_print(&t, stdout);
	attach_free(&t);
	uprobes_remove();
	return 0;
}

/* --sha256: what the host compares before pushing a file. */
static int print_sha256(int n, char **files)
{
	char hex[65];
	long long size;
	int i, status = 0;

	for (i = 0; i < n; i++) {
		if (sha256_file(files[i], hex, &size) == 0) {
			printf("%s %lld %s\n", hex, size, files[i]);
		} else {
			printf("missing - %s\n", files[i]);
			status = 1;
		}
	}
	return status;
}

/* QEMU's ppce500 machine emulates an e500 without the performance monitor
 * registers the kernel's e500 PMU driver programs: opening a hardware counter
 * there traps on mtpmr in kernel mode, an oops. Such an image is refused
 * before anything is loaded; real e500 boards have the registers. */
static int emulated_pmu_would_trap(const struct ktap_image *img)
{
	char compat[32] = "";
	const struct ktap_perf_event *pe = NULL;
	uint32_t i;
	FILE *f;

	for (i = 0; i < img->nevents && !pe; i++)
		if (img->events[i].kind == KTAP_EV_PERF) {
			pe = ktap_perf_event_find(img->events[i].name.s, img->events[i].name.len);
			if (pe && pe->type != 0)	/* PERF_TYPE_HARDWARE only */
				pe = NULL;
		}
	if (!pe || !(f = fopen("/proc/device-tree/compatible", "r")))
		return 0;
	if (!fgets(compat, sizeof(compat), f))
		compat[0] = 0;
	fclose(f);
	if (strcmp(compat, "fsl,qemu-e500"))
		return 0;
	fprintf(stderr, "ktaprun: perf:%s: this CPU's PMU does not count %s: QEMU's ppce500 "
		"emulates no e500 performance monitor, and the kernel's driver would oops "
		"programming it (software events such as perf:cpu-clock work)\n", pe->name,
		pe->name);
	return 1;
}

int main(int argc, char **argv)
{
	struct options o;
	struct ktap_image *img;
	unsigned char *data;
	size_t size;
	int status;

	if (parse_args(argc, argv, &o) < 0)
		return usage(stderr, KTAP_EXIT_USAGE);
	if (o.help)
		return usage(stdout, 0);
	if (o.serve)
		return serve_main(o.serve);
	if (o.sha256)
		return print_sha256(argc - o.sha256, argv + o.sha256);
	if (o.version) {
		printf("ktaprun %s (target %s, ABI %d)\n", KTAPRUN_VERSION, KTAP_TARGET_NAME,
		       KTAP_ABI_VERSION);
		return 0;
	}
	img = load_image(o.image, &data, &size);
	if (!img)
		return KTAP_EXIT_LOAD_ERROR;
	if (o.records)
		status = format_file(&o, img);
	else if (!o.resolve && emulated_pmu_would_trap(img))
		status = KTAP_EXIT_LOAD_ERROR;
	else if (o.resolve)
		status = resolve(img, o.image);
	else if (img->backend == KTAP_BACKEND_EBPF)
		status = run_ebpf(&o, img);	/* no module: bpf(2) */
	else
		status = run_session(&o, img, data, size, argv[0]);
	ktap_image_free(img);
	free(data);
	return status;
}
