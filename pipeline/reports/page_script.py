"""The style sheet and the one inline script of the per-layer page (pipeline/reports/html_page.py).

The page is complete without the script (every unit in rank order, every anchor, the
concept table); the script adds, on a page with a units table (``<table id=unit-table>``):

- sorting by rank, unit, label, category or IoU (the column headers with ``data-sort``)
  and filtering by category, label text, detectors only and concept (the controls form,
  shown only when the script runs); the state is read from and written to the page's
  query string (``?sort=unit&desc=1&cat=object&q=sky&det=1&concept=3``), so a view can be
  bookmarked or sent (``#units`` and ``#unit-<n>`` anchors work beside it);
- a click on a unit's strip shows it enlarged (``?open=<unit>`` opens one at load); a
  click or Escape closes it;
- for tests: ``data-images-loaded="loaded/total"``, ``data-overflow`` (1 when the page
  is wider than the window) and ``data-shown`` (rows shown) on ``<body>`` once loaded.
Plain JavaScript, nothing fetched.
"""
from __future__ import annotations

STYLE = (
    "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "td.l,th.l{text-align:left}tr.det{background:#eef6ee}"
    "table#unit-table{width:100%;table-layout:fixed;font-size:88%}"
    "table#unit-table td{overflow:hidden}"
    "td.best{font-size:80%;color:#444;text-align:left;white-space:nowrap;"
    "text-overflow:ellipsis}"
    "img.strip{display:block;max-width:100%;height:auto;cursor:zoom-in}"
    "div.empty{font-size:75%;color:#b00}img.chart{max-width:100%;height:auto}"
    "div.wide{overflow-x:auto;max-width:100%}"
    "p.warn{background:#fff3cd;border:1px solid #e0b000;padding:4px 8px}"
    "th[data-sort]{cursor:pointer;text-decoration:underline dotted}"
    "#controls{margin:0.5em 0}#controls label{margin-right:1em}"
    ".cchart{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-end;overflow-x:auto;"
    "max-width:100%}"
    ".cgroup{border-bottom:2px solid var(--c)}.cbars{display:flex;align-items:flex-end}"
    ".cbar{display:flex;flex-direction:column;align-items:center;width:15px;"
    "text-decoration:none;color:#222}"
    ".cbar .n{font-size:9px;height:11px}.cbar .bars{display:flex;align-items:flex-end}"
    ".cbar .b1{width:6px;background:var(--c)}"
    ".cbar .b2{width:6px;background:var(--c);opacity:0.35}"
    ".cbar .lab{writing-mode:vertical-rl;transform:rotate(180deg);font-size:10px;"
    "height:8.5em;overflow:hidden;margin-top:2px;text-align:end;white-space:nowrap}"
    ".cname{font-size:80%;text-align:center;color:var(--c)}"
    "table.concepts{font-size:85%}table.concepts td{vertical-align:top}"
    "#lightbox{position:fixed;inset:0;background:rgba(0,0,0,0.85);display:flex;"
    "align-items:center;justify-content:center;cursor:zoom-out}"
    "#lightbox[hidden]{display:none}"
    "#lightbox img{max-width:96vw;max-height:90vh;width:96vw;height:auto;"
    "image-rendering:auto}#lightbox p{color:#fff;position:absolute;top:0.5em;left:1em}")

SCRIPT = r"""<script>
(function(){
var P=new URLSearchParams(location.search),B=document.body;
function loaded(){var im=document.querySelectorAll('img[src]'),ok=0;
 for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;}
 B.setAttribute('data-images-loaded',ok+'/'+im.length);
 B.setAttribute('data-overflow',document.documentElement.scrollWidth>window.innerWidth?1:0);}
window.addEventListener('load',loaded);
var table=document.getElementById('unit-table');if(!table)return;
var tb=table.tBodies[0],rows=Array.prototype.slice.call(tb.rows);
var st={sort:P.get('sort')||'rank',desc:P.get('desc'),cat:P.get('cat')||'',
 q:P.get('q')||'',det:P.get('det')==='1',concept:P.get('concept')};
var ctl=document.getElementById('controls');ctl.hidden=false;
var fc=document.getElementById('f-cat'),fq=document.getElementById('f-q'),
 fd=document.getElementById('f-det');
function num(k){return k!=='label'&&k!=='category';}
function apply(){
 var k=st.sort,desc=st.desc===null?(k==='iou'):st.desc==='1';
 rows.sort(function(a,b){var x=a.dataset[k],y=b.dataset[k];
  if(num(k)){x=parseFloat(x);y=parseFloat(y);}
  var c=x<y?-1:x>y?1:0;if(desc)c=-c;
  return c||(parseFloat(a.dataset.rank)-parseFloat(b.dataset.rank));});
 rows.forEach(function(r){tb.appendChild(r);});
 var only=null;if(st.concept!==null){var el=document.getElementById('concept-'+st.concept);
  if(el)only=el.getAttribute('data-units').split(',');}
 var q=st.q.toLowerCase(),n=0;
 rows.forEach(function(r){var show=(!st.cat||r.dataset.category===st.cat)&&
  (!q||r.dataset.label.toLowerCase().indexOf(q)>=0)&&(!st.det||r.dataset.det==='1')&&
  (!only||only.indexOf(r.dataset.unit)>=0);r.hidden=!show;if(show)n++;});
 document.getElementById('shown').textContent=n+' of '+rows.length+' units shown'+
  (only?' (concept '+document.getElementById('concept-'+st.concept).cells[0].textContent+')':'');
 B.setAttribute('data-shown',n);
 var ths=table.tHead.querySelectorAll('th[data-sort]');
 for(var i=0;i<ths.length;i++){var s=ths[i].getAttribute('data-sort');
  ths[i].setAttribute('aria-sort',s===k?(desc?'descending':'ascending'):'none');}
 var p=new URLSearchParams();if(st.sort!=='rank')p.set('sort',st.sort);
 if(st.desc!==null)p.set('desc',st.desc);if(st.cat)p.set('cat',st.cat);
 if(st.q)p.set('q',st.q);if(st.det)p.set('det','1');
 if(st.concept!==null)p.set('concept',st.concept);
 try{history.replaceState(null,'',(p.toString()?'?'+p:location.pathname)+location.hash);}
 catch(e){}}
fc.value=st.cat;fq.value=st.q;fd.checked=st.det;
fc.onchange=function(){st.cat=fc.value;apply();};
fq.oninput=function(){st.q=fq.value;apply();};
fd.onchange=function(){st.det=fd.checked;apply();};
document.getElementById('f-reset').onclick=function(){
 st={sort:'rank',desc:null,cat:'',q:'',det:false,concept:null};
 fc.value='';fq.value='';fd.checked=false;apply();};
var ths=table.tHead.querySelectorAll('th[data-sort]');
for(var i=0;i<ths.length;i++){ths[i].onclick=function(){var s=this.getAttribute('data-sort');
 if(st.sort===s){var d=st.desc===null?(s==='iou'):st.desc==='1';st.desc=d?'0':'1';}
 else{st.sort=s;st.desc=null;}apply();};}
var box=document.getElementById('lightbox'),big=box.querySelector('img'),
 cap=box.querySelector('p');
function open(img){big.src=img.src;cap.textContent=img.alt;box.hidden=false;
 B.setAttribute('data-open',img.getAttribute('data-unit'));}
function close(){box.hidden=true;B.removeAttribute('data-open');}
box.onclick=close;document.addEventListener('keydown',function(e){if(e.key==='Escape')close();});
var strips=document.querySelectorAll('img.strip');
for(var i=0;i<strips.length;i++){strips[i].onclick=function(){open(this);};}
apply();
if(P.get('open')){var s=document.querySelector("img.strip[data-unit='"+
 parseInt(P.get('open'),10)+"']");if(s)open(s);}
})();
</script>"""
