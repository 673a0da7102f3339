// ort_bench.js -- ONNX Runtime (onnxruntime-node, CPU) latency of one model:
//   node bench/ort_bench.js MODEL.onnx BATCH THREADS ITERS H W
// prints "median <ms> ms" (and p10/p90), after a warm-up, on the same input each time.
'use strict';
const ort = require('onnxruntime-node');

async function main() {
  const [model, batch, threads, iters, h, w] = process.argv.slice(2);
  const B = +batch, T = +threads, N = +iters, H = +(h || 224), W = +(w || 224);
  const sess = await ort.InferenceSession.create(model, {
    intraOpNumThreads: T, interOpNumThreads: 1, executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const data = new Float32Array(B * 3 * H * W);
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.37);
  const feeds = { [sess.inputNames[0]]: new ort.Tensor('float32', data, [B, 3, H, W]) };
  for (let i = 0; i < 3; i++) await sess.run(feeds);
  const t = [];
  for (let i = 0; i < N; i++) {
    const t0 = process.hrtime.bigint();
    await sess.run(feeds);
    t.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  t.sort((a, b) => a - b);
  const q = (p) => t[Math.min(t.length - 1, Math.floor(p * t.length))];
  console.log(`median ${q(0.5).toFixed(3)} ms  p10 ${q(0.1).toFixed(3)}  p90 ${q(0.9).toFixed(3)}  (${N} iters, ort ${ort.env.versions ? ort.env.versions.common : ''})`);
}
main().catch((e) => { console.error(e.message || e); process.exit(1); });
