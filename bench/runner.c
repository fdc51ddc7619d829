/*
 * runner.c - runs the benchmarks: all of them, or those named.
 *
 *   $ build/bench/omnibench            # every benchmark, JSON into results/
 *   $ QUICK=1 build/bench/omnibench hot_exec
 */
#include <stdio.h>
#include <string.h>

int bench_hot_exec(void);
int bench_cold_start(void);
int bench_transfer(void);

static const struct {
	const char *name;
	int (*run)(void);
} benches[] = {
	{ "hot_exec", bench_hot_exec },
	{ "cold_start", bench_cold_start },
	{ "transfer", bench_transfer },
};

int main(int argc, char **argv)
{
	int failed = 0, ran = 0;

	for (size_t i = 0; i < sizeof benches / sizeof *benches; i++) {
		int want = argc < 2;

		for (int a = 1; a < argc; a++)
			want |= strcmp(argv[a], benches[i].name) == 0;
		if (!want)
			continue;
		printf("== %s\n", benches[i].name);
		fflush(stdout);
		ran++;
		if (benches[i].run() != 0) {
			printf("!! %s failed\n", benches[i].name);
			failed++;
		}
	}
	if (ran == 0) {
		fprintf(stderr, "usage: omnibench [");
		for (size_t i = 0; i < sizeof benches / sizeof *benches; i++)
			fprintf(stderr, "%s%s", i ? " | " : "", benches[i].name);
		fprintf(stderr, "]...\n");
		return 100;
	}
	return failed ? 1 : 0;
}
