#!/usr/bin/env python3
"""Extends a fetch trace to 308 minutes: its requests between FROM_SECS and
TO_SECS (the stay's steady part) are repeated, shifted by that span each
time, until 308 minutes. The assumption that a stay goes on as it went,
written as a trace for `energy --trace`.

usage: repeat-trace.py TRACE OUT FROM_SECS TO_SECS (no request between them:
the trace is written as it is)"""
import sys,gzip
src,dst,lo,hi=sys.argv[1],sys.argv[2],float(sys.argv[3]),float(sys.argv[4])
lines=(gzip.open(src,'rt') if src.endswith('.gz') else open(src)).read().splitlines()
boot0=int(lines[0].split('started_boottime_ns=')[1])
rows=[l.split(',') for l in lines[2:] if l.count(',')==7]
out=[lines[0],lines[1]]+[','.join(r) for r in rows]
seg=[r for r in rows if lo<=(int(r[6])-boot0)/1e9<hi]
period=int((hi-lo)*1e9); limit=boot0+308*60*10**9
# Each repetition starts a period after the last (the segment spans less
# than one), so the first row past the limit ends them all.
k=1
while seg and int(seg[0][6])+k*period<limit:
    for r in seg:
        t=int(r[6])+k*period
        if t>=limit: break
        r2=list(r); r2[6]=str(t); r2[7]=str(int(r[7])+k*period) if r[7] else r[7]
        out.append(','.join(r2))
    k+=1
open(dst,'w').write('\n'.join(out)+'\n')
print(dst, len(out)-2, 'requests')
