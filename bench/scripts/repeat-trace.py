#!/usr/bin/env python3
"""Extends a fetch trace to 308 minutes: its requests between FROM_SECS and
TO_SECS (the stay's steady part) are repeated, shifted by that span each
time, until 308 minutes. The assumption that a stay goes on as it went,
written as a trace for `energy --trace`.

usage: repeat-trace.py TRACE OUT FROM_SECS TO_SECS"""
import sys,gzip
src,dst,lo,hi=sys.argv[1],sys.argv[2],float(sys.argv[3]),float(sys.argv[4])
lines=(gzip.open(src,'rt') if src.endswith('.gz') else open(src)).read().splitlines()
boot0=int(lines[0].split('started_boottime_ns=')[1])
rows=[l.split(',') for l in lines[2:] if l.count(',')==7]
out=[lines[0],lines[1]]+[','.join(r) for r in rows]
seg=[r for r in rows if lo<=(int(r[6])-boot0)/1e9<hi]
period=int((hi-lo)*1e9); k=1
while True:
    added=False
    for r in seg:
        t=int(r[6])+k*period
        if (t-boot0)/1e9>=308*60: break
        r2=list(r); r2[6]=str(t); r2[7]=str(int(r[7])+k*period) if r[7] else r[7]
        out.append(','.join(r2)); added=True
    else:
        k+=1; continue
    break
open(dst,'w').write('\n'.join(out)+'\n')
print(dst, len(out)-2, 'requests')
