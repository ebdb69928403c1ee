#!/usr/bin/env node
/**
 * The `finetorch` command line: finetune, inspect, predict, evaluate, serve, demo (commander parses).
 */
import { Command } from 'commander';
import { UsageError } from './common';

// Commands load libtorch only when they run, so --help and --version answer at once.
/* eslint-disable @typescript-eslint/no-require-imports */
const commands = () => require('./commands') as typeof import('./commands');
const { version } = require('../../package.json') as { version: string };

function run(fn: (...args: any[]) => Promise<unknown>) { // eslint-disable-line @typescript-eslint/no-explicit-any
  return async (...args: unknown[]) => {
    try {
      await fn(...args);
    } catch (e) {
      const err = e as Error;
      process.stderr.write(`finetorch: ${err instanceof UsageError ? err.message : err.message ?? String(e)}\n`);
      if (!(err instanceof UsageError) && process.env.FINETORCH_DEBUG) process.stderr.write(`${err.stack}\n`);
      process.exitCode = 1;
    }
  };
}

const program = new Command();
program.name('finetorch').description('Fine-tune pretrained TorchScript models on your own labelled images').version(version);

program.command('finetune')
  .description('fine-tune a TorchScript model on an image folder (one sub-folder per class)')
  .requiredOption('--model <file>', 'TorchScript model (torch.jit.script(model).save(...))')
  .requiredOption('--data <dir>', 'training images, one sub-folder per class')
  .option('--val <dir>', 'validation images (same classes)')
  .option('--val-split <fraction>', 'hold out this fraction of --data for validation (default 0.1)')
  .option('--epochs <n>', 'epochs (default 5)')
  .option('--batch-size <n>', 'batch size (default 32)')
  .option('--lr <rate>', 'peak learning rate (default 1e-3)')
  .option('--freeze <patterns>', "comma-separated parameter globs to freeze ('layer1.**,conv1.*'), or 'backbone' for all but the head")
  .option('--unfreeze-at <epoch>', 'unfreeze everything at this epoch (1-based) with a tenth of the learning rate')
  .option('--head <name>', 'the Linear layer to replace (default: the final Linear)')
  .option('--lora <spec>', "train a LoRA adapter instead of the weights: 'r=8,alpha=16,targets=layer4.**' (several targets joined by +); writes adapter/ beside model.pt")
  .option('--device <device>', 'cpu, cuda or cuda:N (default cpu)')
  .option('--size <pixels>', 'input size (default 224)')
  .option('--seed <n>', 'seed for splits, shuffles and augmentation (default 0)')
  .option('--out <dir>', 'output folder (default finetune-out)')
  .option('--resume', 'continue from the last checkpoint in --out')
  .option('--no-progress', 'no progress bars')
  .action(run((o) => (require('./finetune') as typeof import('./finetune')).finetune(o)));

program.command('inspect <model>').description('modules, parameters, head candidates and recorded metadata of a model').action(run((m) => commands().inspect(m)));

program.command('predict <model> <images...>')
  .description('top-k classes with probabilities (class names and preprocessing from the model file, or classes.json beside it)')
  .option('--top <k>', 'how many classes to show (default 5)')
  .option('--size <pixels>', 'input size (default: the one the model file records, else 224)')
  .option('--device <device>', 'cpu, cuda or cuda:N')
  .action(run((m, imgs, o) => commands().predict(m, imgs, o)));

program.command('evaluate <model>')
  .description('accuracy, per-class precision/recall and the confusion matrix on an image folder')
  .requiredOption('--data <dir>', 'images, one sub-folder per class')
  .option('--size <pixels>', 'input size (default: the one the model file records, else 224)')
  .option('--batch-size <n>', 'batch size (default 32)')
  .option('--device <device>', 'cpu, cuda or cuda:N')
  .action(run((m, o) => commands().evaluateCommand(m, o)));

program.command('serve <model>')
  .description('an HTTP service: POST /predict with an image answers the top-k classes as JSON; POST /finetune { "dir": "folder" } (or a tar of the folder as the body) fine-tunes a copy in the background and hot-swaps it in when it validates better; GET /status')
  .option('--port <n>', 'port to listen on; 0 picks a free one, printed on stdout (default 8080)')
  .option('--host <address>', 'address to listen on (default 127.0.0.1)')
  .option('--labels <file>', 'class names as a JSON array (default: the ones the model file records, else classes.json beside it)')
  .option('--topk <k>', 'how many classes each answer gives (default 5)')
  .option('--size <pixels>', 'input size (default: the one the model file records, else 224)')
  .option('--max-batch <n>', 'the most concurrent requests run as one batch (default 8; 1 turns batching off)')
  .option('--max-delay-ms <ms>', 'how long a request waits for company before its batch runs (default 2)')
  .option('--optimize', 'serve a frozen, inference-optimized copy (torch.jit.optimize_for_inference): faster single images, outputs equal within float rounding')
  .option('--threads <n>', 'intra-op threads of the predictor (default 1)')
  .option('--out <file>', 'where POST /finetune saves the weights it swaps in (default: kept in memory only; never the served file)')
  .option('--training-nice <n>', 'OS priority (nice, 0-19) of a fine-tune\'s threads, so requests get the CPU first (default 10; 0 shares it equally)')
  .action(run((m, o) => (require('./serve') as typeof import('./serve')).serve(m, o)));

program.command('demo')
  .description('fine-tune the bundled pretrained model on 5 unseen Fashion-MNIST classes vs training from scratch')
  .option('--out <dir>', 'output folder (default demo-output)')
  .option('--epochs <n>', 'epochs (default 6)')
  .option('--per-class <n>', 'labelled images per class (default 50)')
  .option('--no-progress', 'no progress bars')
  .action(run((o) => (require('./demo') as typeof import('./demo')).demo({ out: o.out, epochs: o.epochs ? Number(o.epochs) : undefined, perClass: o.perClass ? Number(o.perClass) : undefined, progress: o.progress === false ? false : undefined })));

program.enablePositionalOptions();  // so `launch` passes the script's own options through
program.command('launch <script> [args...]')
  .description('run a training script as several torch.distributed ranks, as torchrun (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, ... set for each)')
  .option('--nproc-per-node <n>', 'ranks on this machine (default 1)')
  .option('--nnodes <n>', 'machines taking part (default 1)')
  .option('--node-rank <r>', 'this machine\'s index in [0, nnodes) (default 0)')
  .option('--master-addr <address>', 'address of the node with rank 0 (default 127.0.0.1)')
  .option('--master-port <port>', 'a free port on the master node (default 29500)')
  .option('--grace-ms <ms>', 'after a rank fails, how long the others get to fail on their own before they are ended (default 30000)')
  .passThroughOptions()
  .action(run(async (script, args, o) => {
    process.exitCode = await (require('./launch') as typeof import('./launch')).launch(script, args, o);
  }));

program.parseAsync(process.argv);
