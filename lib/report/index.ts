/** `report`: the HTML training report and its charts. */
export { writeReport } from './report';
export type { ReportInput, Misclassified, RunHistory } from './report';
