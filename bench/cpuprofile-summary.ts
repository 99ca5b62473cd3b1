import { readFileSync } from 'node:fs';

/**
 * Reads a V8 .cpuprofile (`node --cpu-prof`) and prints where the samples went: self time per package (node_modules
 * package, the app's own dist/ area, node: internals, GC, idle) and the top functions by self and by inclusive time.
 * `node dist/bench/cpuprofile-summary.js <file.cpuprofile> [top] [filter]`: with a filter (a substring of a function
 * name or URL), the inclusive time of the matching frames and the callees below them (each counted once per sample).
 */

interface Frame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface Node {
  id: number;
  callFrame: Frame;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

function area(url: string, name: string): string {
  if (name === '(garbage collector)' || name === '(idle)' || name === '(program)' || name === '(root)') return name;
  if (!url) return '(native)';
  if (url.startsWith('node:')) return 'node:' + url.slice(5).split('/')[0];
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 14).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  const d = url.indexOf('/dist/');
  if (d >= 0)
    return (
      'app:' +
      url
        .slice(d + 6)
        .split('/')
        .slice(0, 2)
        .join('/')
    );
  return url;
}

function main(): void {
  const [file, topArg, filter] = process.argv.slice(2);
  const p = JSON.parse(readFileSync(file!, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfUs = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) selfUs.set(p.samples[i]!, (selfUs.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i] ?? 0));
  const total = [...selfUs.values()].reduce((a, b) => a + b, 0);
  const key = (f: Frame) => `${f.functionName || '(anonymous)'} ${area(f.url, f.functionName)}:${f.lineNumber + 1}`;
  const areaSelf = new Map<string, number>();
  const fnSelf = new Map<string, number>();
  const fnIncl = new Map<string, number>();
  const areaIncl = new Map<string, number>();
  let filtered = 0;
  const under = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const f = byId.get(id)!.callFrame;
    areaSelf.set(area(f.url, f.functionName), (areaSelf.get(area(f.url, f.functionName)) ?? 0) + us);
    fnSelf.set(key(f), (fnSelf.get(key(f)) ?? 0) + us);
    // Walk up the stack: each function and area counted once per sample.
    const seen = new Set<string>();
    const seenArea = new Set<string>();
    const stack: Frame[] = [];
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) stack.push(byId.get(cur)!.callFrame);
    for (const fr of stack) {
      const k = key(fr);
      if (!seen.has(k)) fnIncl.set(k, (fnIncl.get(k) ?? 0) + us);
      seen.add(k);
      const a = area(fr.url, fr.functionName);
      if (!seenArea.has(a)) areaIncl.set(a, (areaIncl.get(a) ?? 0) + us);
      seenArea.add(a);
    }
    if (filter) {
      const at = stack.findIndex((fr) => fr.functionName.includes(filter) || fr.url.includes(filter));
      if (at >= 0) {
        filtered += us;
        // attribute to the area of the leaf frame
        const a = area(stack[0]!.url, stack[0]!.functionName);
        under.set(a, (under.get(a) ?? 0) + us);
      }
    }
  }
  const top = Number(topArg ?? 30);
  const ms = (us: number) => (us / 1000).toFixed(1).padStart(9);
  const pct = (us: number) => ((100 * us) / total).toFixed(1).padStart(5) + '%';
  const print = (title: string, m: Map<string, number>, k: number) => {
    process.stdout.write(`\n${title}\n`);
    for (const [name, us] of [...m].sort((a, b) => b[1] - a[1]).slice(0, k))
      process.stdout.write(`${ms(us)} ms ${pct(us)}  ${name}\n`);
  };
  process.stdout.write(`${file}: ${(total / 1000).toFixed(0)} ms sampled, ${p.samples.length} samples\n`);
  print('self time by area', areaSelf, 40);
  print('inclusive time by area (once per sample)', areaIncl, 40);
  print('self time by function', fnSelf, top);
  print('inclusive time by function', fnIncl, top);
  if (filter) {
    process.stdout.write(`\nunder frames matching "${filter}": ${(filtered / 1000).toFixed(1)} ms ${pct(filtered)}\n`);
    print(`  leaf area under "${filter}"`, under, 30);
  }
}

main();
