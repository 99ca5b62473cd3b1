/**
 * The `--name value` / `--name=value` / `--switch` options of the sandbox's command-line tools (dev-token, dev-cert).
 * `switches` take no value; anything else needs one. A bare argument, or an option missing its value, is an error.
 */
export function parseCliArgs(argv: readonly string[], switches: readonly string[]): Record<string, string | true> {
  const out: Record<string, string | true> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) throw new Error(`Unexpected argument "${a}".`);
    const [k, inline] = a.slice(2).split('=', 2) as [string, string | undefined];
    if (switches.includes(k)) out[k] = true;
    else {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`--${k} needs a value.`);
      out[k] = v;
    }
  }
  return out;
}

/** An option's value (undefined for a switch or an absent option). */
export function optionValue(args: Record<string, string | true>, k: string): string | undefined {
  const v = args[k];
  return typeof v === 'string' ? v : undefined;
}

/** A comma-separated option as a list (trimmed, empty items dropped); undefined when absent. */
export function optionList(args: Record<string, string | true>, k: string): string[] | undefined {
  return optionValue(args, k)
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}
