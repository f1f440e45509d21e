// SPDX-License-Identifier: GPL-2.0-only
/*
 * SAMPLE livepatch (not a security fix): /proc/cmdline says the kernel is livepatched.
 * Only the replacement function lives here; livegraft generates the module around it.
 */
#include <linux/seq_file.h>

int livegraft_sample_cmdline_proc_show(struct seq_file *m, void *v)
{
	seq_puts(m, "this kernel is livepatched by livegraft (LGSA-SAMPLE-0001)\n");
	return 0;
}
