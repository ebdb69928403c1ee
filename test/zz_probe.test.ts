import { performance } from 'perf_hooks';
import * as torch from '../lib';
test('probe', async () => {
  const s = torch.tensor([1, 2]);
  for (const N of [1000, 5000, 20000]) {
    const pending = Array.from({ length: N }, (_, i) => s.add(i));
    let last = performance.now(); const gaps: number[] = [];
    const iv = setInterval(() => { const n = performance.now(); gaps.push(n - last); last = n; }, 1);
    const t = performance.now();
    const r = await Promise.all(pending);
    const tot = performance.now() - t;
    clearInterval(iv); gaps.push(performance.now() - last);
    r.forEach((x) => x.dispose());
    console.log(N, tot.toFixed(0), gaps.map((g) => g.toFixed(0)).join(','));
  }
});
