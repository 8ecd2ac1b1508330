// Stable test hooks on DataTable rows: `data-testid` (and a data attribute
// naming the row, e.g. `data-slot="alice"`) through PrimeVue's pass-through.

type RowOptions = { props?: { rowData?: Record<string, unknown> } };

export function rowHooks(testid: string, attr?: string, key?: string) {
  return {
    bodyRow: (o: RowOptions) => {
      const hooks: Record<string, string> = { "data-testid": testid };
      const row = o.props?.rowData;
      if (attr && key && row && row[key] !== undefined) hooks[`data-${attr}`] = String(row[key]);
      return hooks;
    },
  };
}
