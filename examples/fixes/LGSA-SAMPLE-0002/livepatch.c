// SPDX-License-Identifier: GPL-2.0-only
/*
 * SAMPLE livepatch (not a security fix): /proc/version ends with this sample's id, so a
 * check in the guest can see that the replacement is live.
 */
#include <linux/seq_file.h>
#include <linux/utsname.h>

int livegraft_sample_version_proc_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%s version %s %s [livegraft LGSA-SAMPLE-0002]\n",
		   utsname()->sysname, utsname()->release, utsname()->version);
	return 0;
}
