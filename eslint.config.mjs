// `npm run lint`: eslint's and typescript-eslint's recommended rules (syntax only, no type
// information) over the TypeScript in lib/, test/ and examples/, and the plain Node scripts
// (CommonJS) in bench/, scripts/ and test/fixtures/.
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'dist-examples/', 'build/', 'build-gyp/', 'prebuilds/', 'coverage/', 'node_modules/', '.gpu-pack/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    // Output layouts are matched with their literal spaces (`/^\s+\d+\.\d%  Green$/`).
    rules: { 'no-regex-spaces': 'off' },
  },
  {
    files: ['**/*.ts'],
    rules: {
      // `_`-prefixed names are deliberately unused (callback positions, destructured-away fields).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
  {
    files: ['bench/**/*.js', 'scripts/*.js', 'scripts/find-libtorch', 'scripts/install', 'scripts/prebuild', 'test/fixtures/**/*.js'],
    languageOptions: { sourceType: 'commonjs', globals: globals.node },
    rules: {
      '@typescript-eslint/no-require-imports': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
);
