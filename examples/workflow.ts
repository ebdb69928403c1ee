/**
 * The fine-tuning workflow in seven steps, as one program (the README walks through it).
 * Run:
 *   npm run example            (compiles, then runs dist-examples/workflow.js)
 */
import * as path from 'path';
import * as torch from 'finetorch';
import { data, train } from 'finetorch';

export async function main(out = 'finetuned.pt'): Promise<number> {
  // 1. Load a pretrained TorchScript model (here the small ResNet finetorch ships, pretrained
  //    on Fashion-MNIST classes 0-4; any torch.jit.script(...) export works the same way).
  const model = await torch.jit.load(path.join(__dirname, '..', 'models', 'fmnist-resnet-pretrained.pt'));

  // 2. Prepare the data: 2,000 Fashion-MNIST images, split 80/20, batched. For photos, use
  //    new data.ImageFolder('photos/train', { transform: transforms.imagenet({ train: true }) }).
  const all = new data.FashionMNIST({ train: true });
  const [trainSet, valSet] = data.randomSplit(new data.Subset(all, Array.from({ length: 2000 }, (_, i) => i)), [0.8, 0.2], { seed: 0 });
  const trainLoader = new data.DataLoader(trainSet, { batchSize: 32, shuffle: true, seed: 0 });
  const valLoader = new data.DataLoader(valSet, { batchSize: 100 });

  // 3. Adapt the head to all ten classes; train only the head and the last stage.
  const head = await model.replaceHead({ numClasses: 10 });
  model.freeze().unfreeze([`${head}.*`, 'layer3.**']);

  // 4. Training parts: label-smoothed cross-entropy, AdamW, a cosine schedule.
  const loss = new torch.nn.CrossEntropyLoss({ labelSmoothing: 0.1 });
  const optimizer = new torch.optim.AdamW(model.parameters({ trainable: true }), { lr: 3e-3, weightDecay: 0.01 });
  const scheduler = new torch.optim.lrScheduler.CosineAnnealingLR(optimizer, { tMax: 3 });

  // 5. Train (each step runs on libtorch's thread; the event loop stays free).
  await train.fit(model, { train: trainLoader, val: valLoader, epochs: 3, optimizer, loss, scheduler });

  // 6. Evaluate.
  const { accuracy, top5 } = await train.evaluate(model, valLoader);
  console.log(`validation accuracy ${(accuracy * 100).toFixed(1)}%, top-5 ${(top5 * 100).toFixed(1)}%`);

  // 7. Ship it: a TorchScript file that Python's torch.jit.load reads back, carrying its class
  //    names and final metrics (model.metadata once loaded; `finetorch predict` prints the names).
  await model.save(out, { metadata: train.describe({ classes: data.FashionMNIST.classes, task: 'single-label', metrics: { accuracy, top5 } }) });
  return accuracy;
}

if (require.main === module) main(process.argv[2]).catch((e) => { console.error(e); process.exit(1); });
