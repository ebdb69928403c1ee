#!/usr/bin/env node
// Makes the demo's pretrained model: exports the small ResNet architecture with PyTorch
// (scripts/fmnist_resnet.py), then pretrains it with finetorch itself on Fashion-MNIST classes
// 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat). Classes 5-9 (Sandal, Shirt, Sneaker, Bag,
// Ankle boot) are never seen: the demo fine-tunes on them.
//   node scripts/pretrain.js [--epochs 3]
// Writes models/fmnist-resnet-init.pt (random weights), models/fmnist-resnet-pretrained.pt and
// models/fmnist-resnet.json.
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const torch = require('../dist');

const root = path.resolve(__dirname, '..');
const models = path.join(root, 'models');
const python = require('./python').pythonPath();
const epochs = Number(process.argv[process.argv.indexOf('--epochs') + 1]) || 3;
const SEED = 20261127;

(async () => {
  fs.mkdirSync(models, { recursive: true });
  const init = path.join(models, 'fmnist-resnet-init.pt');
  execFileSync(python, [path.join(__dirname, 'fmnist_resnet.py'), init, '5', String(SEED)], { stdio: 'inherit' });
  await torch.manualSeed(SEED);
  const model = await torch.jit.load(init);
  const train = new torch.data.FashionMNIST({ train: true });
  const test = new torch.data.FashionMNIST({ train: false });
  const seen = (ds) => [...ds.targets].flatMap((t, i) => (t < 5 ? [i] : []));
  const trainSet = new torch.data.Subset(train, seen(train));
  const testSet = new torch.data.Subset(test, seen(test));
  const loader = new torch.data.DataLoader(trainSet, { batchSize: 64, shuffle: true, seed: SEED });
  const optimizer = new torch.optim.AdamW(model.parameters(), { lr: 3e-3, weightDecay: 1e-4 });
  const scheduler = new torch.optim.lrScheduler.OneCycleLR(optimizer, { maxLr: 3e-3, totalSteps: epochs * loader.length });
  const history = await torch.train.fit(model, { train: loader, epochs, optimizer, scheduler });
  const ev = await torch.train.evaluate(model, new torch.data.DataLoader(testSet, { batchSize: 256 }));
  console.log(`pretrained on classes 0-4: test accuracy ${(ev.accuracy * 100).toFixed(1)}%`);
  const out = path.join(models, 'fmnist-resnet-pretrained.pt');
  await model.save(out);
  fs.writeFileSync(path.join(models, 'fmnist-resnet.json'), JSON.stringify({
    architecture: 'scripts/fmnist_resnet.py FashionResNet (1x28x28 input, 16-32-64 channels)',
    pretrainedOn: 'Fashion-MNIST train, classes 0-4', classes: torch.data.FashionMNIST.classes.slice(0, 5),
    epochs, seed: SEED, testAccuracy: ev.accuracy, libtorch: torch.version.libtorch,
    history: history.epochs.map((e) => ({ epoch: e.epoch, loss: e.loss, accuracy: e.accuracy })),
  }, null, 2) + '\n');
  console.log(`wrote ${path.relative(root, out)} (${(fs.statSync(out).size / 1e6).toFixed(2)} MB)`);
})().catch((e) => { console.error(e); process.exit(1); });
